"""Scoring and reporting of the DSF-claim benchmark (``bench/dsf_claim.py``, issue 16): per-arm NYU scores from
the community-format prediction files, the synthetic-to-supervised gap arithmetic, the table and the plots.

Pure functions over files and small dataclasses, no training: the tests drive them with fake result sets.

Conventions fixed before any result was seen (docs/BENCHMARKS.md, "DSF claim"):
- an arm's score is the NYU protocol (util/evaluate.py) of its prediction file on the stand-in test split,
  view 1: ``DSF-11`` = mean error over DSF's 11 joints (its own metric, docs/method.md §14), ``14-joint`` the
  community mean; success = fraction of frames whose maximum joint error <= D;
- the branch of an arm is the stage-2 pixel-wise branch (``pwe``, DSF's final joint output) unless the arm
  names the MANO branch;
- gap closed = (E_synthetic - E_method) / (E_synthetic - E_supervised) on DSF-11 errors (1 = as good as
  supervised, 0 = no better than synthetic-only, < 0 worse); undefined when the gap is below ``MIN_GAP_MM`` (a
  fraction of a sub-millimetre gap is noise). Primary: the pixel branch; the MANO branch's fraction is reported too;
- "dual-branch beats each single branch": DSF's pixel branch beats the pixel branch of the run without
  inter-branch teaching AND DSF's MANO branch beats that run's MANO branch (same branch, same budget).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from util.evaluate import SUCCESS_THRESHOLDS_MM, evaluate_nyu, load_predictions
from util.joints import NYU_EVAL_14

#: targets of issue 16 (fractions of the gap)
TARGET_GAP, TARGET_GAP_MISMATCH = 0.6, 0.4
#: smallest synthetic-to-supervised gap (mm) whose closed fraction is reported
MIN_GAP_MM = 1.0


@dataclass(frozen=True)
class ArmResult:
    """Scores of one arm. Errors in mm; ``success`` (81,) over 0..80 mm; ``train_s`` wall seconds of the
    training process(es) behind it (None: not trained in this benchmark, e.g. a re-scored checkpoint)."""

    name: str
    label: str
    group: str  # main | ablation | mismatch
    branch: str  # pwe | mano
    tree: str  # clean | thick
    mean_11: float
    mean_14: float
    success: np.ndarray = field(repr=False)
    train_s: float | None = None

    @property
    def success_20(self) -> float:
        return float(self.success[20])

    @property
    def success_40(self) -> float:
        return float(self.success[40])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["success"] = [float(v) for v in self.success]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArmResult:
        return cls(**{**d, "success": np.asarray(d["success"], np.float64)})


def tree_gt_uvd(tree: str | Path, split: str = "test", view: int = 1) -> np.ndarray:
    """(N, 14, 3) ground-truth (u px, v px, d mm) of an NYU-format tree's split and Kinect view."""
    from dataloader.depth_io import load_joint_data

    labels = load_joint_data(Path(tree) / split / "joint_data.mat")
    return np.asarray(labels.joint_uvd[view - 1][:, list(NYU_EVAL_14)], np.float64)


def score_file(pred_file: str | Path, gt_uvd: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(DSF-11 mean, 14-joint mean, success (81,)) of a community-format prediction file."""
    pred = load_predictions(pred_file, num_frames=len(gt_uvd))
    s = evaluate_nyu(pred, gt_uvd, split=None)
    return float(s.mean_11), float(s.mean_14), np.asarray(s.success, np.float64)


def gap_closed(e_synthetic: float, e_method: float, e_supervised: float, min_gap: float = MIN_GAP_MM
               ) -> float | None:
    """Fraction of the synthetic-to-supervised error gap that a method closes (None when the gap is < ``min_gap``
    mm, including no gap at all)."""
    gap = e_synthetic - e_supervised
    if not gap >= min_gap:
        return None
    return (e_synthetic - e_method) / gap


def summarize(results: dict[str, ArmResult]) -> dict:
    """The claim's numbers from arm results keyed by name (missing arms give None entries).

    Keys: gap_closed (clean), gap_closed_mismatch, dual_beats_single (DSF below both single-branch arms),
    ablation_deltas {arm: E_arm - E_dsf of the same branch}, targets {name: bool | None}.
    """
    def err(name: str) -> float | None:
        r = results.get(name)
        return None if r is None or not math.isfinite(r.mean_11) else r.mean_11

    def gap(syn: str, method: str, sup: str) -> float | None:
        e = [err(syn), err(method), err(sup)]
        return None if None in e else gap_closed(*e)

    g = gap("synthetic", "dsf", "supervised")
    g_mano = gap("synthetic_mano", "dsf_mano", "supervised_mano")
    gm = gap("synthetic_thick", "dsf_thick", "supervised_thick")
    pairs = [(err("dsf"), err("pwe_only")), (err("dsf_mano"), err("mano_only"))]  # same branch, with vs without
    dual = None if any(None in p for p in pairs) else all(a < b for a, b in pairs)
    ref = {"pwe": err("dsf"), "mano": err("dsf_mano")}  # an ablation against DSF's same branch
    deltas = {n: round(r.mean_11 - ref[r.branch], 3) for n, r in results.items()
              if r.group == "ablation" and ref.get(r.branch) is not None}
    return {
        "gap_closed": g, "gap_closed_mano_branch": g_mano, "gap_closed_mismatch": gm, "dual_beats_single": dual,
        "ablation_deltas": deltas,
        "targets": {
            f"DSF closes >= {TARGET_GAP:.0%} of the gap": None if g is None else g >= TARGET_GAP,
            "dual-branch beats each single branch": dual,
            f"mismatch: DSF closes >= {TARGET_GAP_MISMATCH:.0%}": None if gm is None else gm >= TARGET_GAP_MISMATCH,
        },
    }


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def format_table(results: Sequence[ArmResult]) -> str:
    """Markdown table: arm, branch, test data, DSF-11, 14-joint, success@20/40, train time."""
    lines = ["| arm | branch | test data | DSF-11 (mm) | 14-joint (mm) | success ≤20 mm | success ≤40 mm | "
             "train time |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = "—" if r.train_s is None else f"{r.train_s / 60:.1f} min"
        lines.append(f"| {r.label} | {r.branch} | {r.tree} | {r.mean_11:.2f} | {r.mean_14:.2f} | "
                     f"{r.success_20:.1%} | {r.success_40:.1%} | {t} |")
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """Plain-text lines: gap fractions and the targets with PASS / FAIL / n/a."""
    out = [f"fraction of the synthetic-to-supervised gap closed by DSF (pixel branch): "
           f"{_fmt(summary['gap_closed'], '.1%')}",
           f"... MANO branch: {_fmt(summary.get('gap_closed_mano_branch'), '.1%')}",
           f"... under model mismatch (pixel branch): {_fmt(summary['gap_closed_mismatch'], '.1%')}",
           f"(n/a: an arm is missing or the gap is below {MIN_GAP_MM:g} mm)"]
    for name, ok in summary["targets"].items():
        out.append(f"target: {name}: {'n/a' if ok is None else ('PASS' if ok else 'FAIL')}")
    return "\n".join(out)


def save_results(path: str | Path, results: Sequence[ArmResult], summary: dict, meta: dict) -> None:
    """JSON with every arm's scores (success curves included), the summary and the run's metadata."""
    data = {"meta": meta, "summary": summary, "arms": [r.to_dict() for r in results]}
    Path(path).write_text(json.dumps(data, indent=1))


# ------------------------------------------------------------------------------------------------------------
# plots (matplotlib Figure objects: no pyplot state)
# ------------------------------------------------------------------------------------------------------------
def plot_success(path: str | Path, results: Sequence[ArmResult], title: str) -> None:
    """Success curves of all arms on one axes (mismatch arms dashed)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.2), dpi=120)
    ax = fig.subplots()
    cmap = colormaps["tab20"]
    for i, r in enumerate(results):
        ax.plot(SUCCESS_THRESHOLDS_MM, r.success, color=cmap(i % 20), linewidth=1.6,
                linestyle="--" if r.tree != "clean" else "-",
                label=f"{r.label}{'' if r.tree == 'clean' else f' [{r.tree} hands]'} ({r.mean_11:.1f} mm)")
    ax.set_xlim(0, 80)
    ax.set_ylim(0, 1)
    ax.set_xlabel("maximum allowed joint error D (mm)")
    ax.set_ylabel("fraction of frames with all joints within D")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    ax.legend(loc="lower right", fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)


def plot_ablation(path: str | Path, results: Sequence[ArmResult], reference: str = "dsf",
                  title: str = "") -> None:
    """Bar chart of DSF-11 errors: the reference arm, the ablations and the two bounds."""
    from matplotlib.figure import Figure

    keep = [r for r in results if r.tree == "clean" and (r.group == "ablation" or r.name in
                                                          ("synthetic", "supervised", reference, reference + "_mano"))]
    order = {"synthetic": 0, reference: 1, reference + "_mano": 2, "supervised": 99}
    keep.sort(key=lambda r: order.get(r.name, 50))
    colors = ["tab:gray" if r.name == "synthetic" else "tab:green" if r.name == "supervised"
              else "tab:blue" if r.name.startswith(reference) else "tab:orange" for r in keep]
    fig = Figure(figsize=(max(6.0, 0.9 * len(keep) + 2), 4.6), dpi=120)
    ax = fig.subplots()
    x = np.arange(len(keep))
    bars = ax.bar(x, [r.mean_11 for r in keep], color=colors)
    for b, r in zip(bars, keep):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{r.mean_11:.1f}", ha="center", va="bottom",
                fontsize="x-small")
    ax.set_xticks(x, [r.label for r in keep], rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("DSF-11 mean joint error (mm)")
    ax.set_title(title or "ablations of the DSF arm (lower is better)")
    ax.grid(True, axis="y", alpha=0.4)
    fig.tight_layout()
    fig.savefig(path)


def plot_loss_curves(path: str | Path, scalars: dict[str, tuple[np.ndarray, np.ndarray]], title: str,
                     count_keys: Sequence[str] = ()) -> None:
    """One small panel per logged scalar (steps, values); ``count_keys`` (e.g. the number of selected M2P pairs)
    are drawn as step plots."""
    from matplotlib.figure import Figure

    names = sorted(scalars)
    if not names:
        return
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), dpi=110)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names):
        steps, values = scalars[name]
        marker = "o" if len(steps) < 30 else None  # a few steps (smoke / quick runs): show the points
        if name in count_keys:
            ax.step(steps, values, where="post", linewidth=1.0, color="tab:red", marker=marker, markersize=3)
        else:
            ax.plot(steps, values, linewidth=1.0, marker=marker, markersize=3)
            if np.all(np.asarray(values) > 0) and np.ptp(np.log10(np.asarray(values) + 1e-30)) > 2:
                ax.set_yscale("log")
        ax.set_title(name, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.4 * rows)))
    fig.savefig(path)


def read_scalar_log(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-step scalars of a training run: ``train_log.jsonl`` (one JSON object per line with ``step`` and
    name -> value) if present, else the TensorBoard event files under the run folder. {} if neither."""
    run_dir = Path(run_dir)
    jl = run_dir / "train_log.jsonl"
    series: dict[str, tuple[list, list]] = {}
    if jl.is_file():
        for line in jl.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = rec.get("step")
            if step is None:
                continue
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    s = series.setdefault(k, ([], []))
                    s[0].append(step)
                    s[1].append(v)
        return {k: (np.asarray(a), np.asarray(b, np.float64)) for k, (a, b) in series.items()}
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not events:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for ev in events:
        acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            s = series.setdefault(tag, ([], []))
            for e in acc.Scalars(tag):
                s[0].append(e.step)
                s[1].append(e.value)
    return {k: (np.asarray(a), np.asarray(b, np.float64)) for k, (a, b) in series.items()}
