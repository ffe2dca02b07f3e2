"""The paper's claim, measured on the NYU-format stand-in (issue 16): synthetic-only vs DSF vs supervised, the
ablations and the model-mismatch re-runs, every arm a set of config overrides of ``python train_render.py``.

Usage (from the repository root)::

    .venv/bin/python bench/dsf_claim.py [--quick | --full] [--out DIR] [--dry-run] [--fresh]

Modes (budgets fixed in :data:`MODES` before any result was seen; every arm of a mode gets the same width,
batch, seed and iteration budget):

- ``--quick``: smoke version for reviewers (< 25 min on the 2-core CPU): tiny data and a handful of
  iterations per arm -- it shows that every arm runs end to end and how the report looks, not the method's
  effect;
- default: the CPU measurement (< 3 h on the 2-core CPU when the machine is not shared);
- ``--full``: the official network width on a GPU (not run on the development machine).

Pipeline (each box one ``train_render.py`` process; all arms start from the same pre-training checkpoint):

1. stand-in data: ``data/nyu`` (the "real" domain) and ``data/nyu_thick`` (same scenes, hands rendered with
   thicker fingers than MANO can represent: ``dataloader.standin_mismatch``), with released-format MANO fits;
2. ``transfer``: Consis-CycleGAN trained on synthetic vs ``data/nyu`` (reduced generator on the CPU);
3. ``pretrain``: synthetic pre-training through that G_A (shared start of every arm);
4. arms (N iterations each from the pre-training checkpoint): ``synthetic`` (pre-training continued),
   ``dsf`` (self-supervised fine-tuning), ``supervised`` (upper bound: the pre-training losses on labelled real
   crops, labels from the fits; NOT part of DSF), ablations ``no_inter_branch`` (scored as "MANO branch only" and
   "pixel branch only"), ``no_transfer``, ``one_stage``, ``no_collision``, ``no_part_icp``; mismatch re-runs
   ``dsf_thick``, ``supervised_thick`` and the ``synthetic`` checkpoint re-scored on the thick test split.

Outputs in ``--out`` (default ``bench_runs/dsf_claim/<mode>``): ``runs/nyu/<run>/`` (checkpoints, community-format
predictions ``predictions_s2_{pwe,mano}_v1.txt``, ``test_scores.json``, ``train_log.jsonl``, logs),
``claim_results.json``, ``claim_table.md``, ``success_curves.png``, ``ablations.png``, ``dsf_loss_curves.png``.
Runs already finished (``done.json``) are reused unless ``--fresh``.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from bench.claim_report import (ArmResult, format_summary, format_table, plot_ablation,  # noqa: E402
                                plot_loss_curves, plot_success, read_scalar_log, save_results, score_file,
                                summarize, tree_gt_uvd)


@dataclass(frozen=True)
class Budget:
    """Everything a mode fixes up front (identical for every arm)."""

    train_frames: int
    test_frames: int
    width: float
    batch_size: int
    pretrain_iters: int  # shared pre-training
    arm_iters: int  # every arm after the pre-training
    transfer_iters: int
    transfer_ngf: int
    transfer_n_blocks: int
    seed: int = 0
    num_workers: int = 1
    device: str = ""  # "" = trainer default (CUDA if present)
    mismatch: str = "thick"
    #: cost of one iteration relative to a pre-training one (ETA only; re-estimated while running)
    cost: dict = field(default_factory=lambda: {"transfer": 0.3, "pretrain": 1.0, "finetune": 2.2,
                                                "supervised": 1.0, "test": 0.0})


MODES: dict[str, Budget] = {
    # pipeline check only (tests / before a long run): numbers meaningless
    "smoke": Budget(train_frames=8, test_frames=8, width=0.125, batch_size=4, pretrain_iters=2, arm_iters=1,
                    transfer_iters=2, transfer_ngf=4, transfer_n_blocks=1, num_workers=0),
    "quick": Budget(train_frames=32, test_frames=16, width=0.25, batch_size=8, pretrain_iters=10, arm_iters=2,
                    transfer_iters=4, transfer_ngf=8, transfer_n_blocks=2),
    "default": Budget(train_frames=512, test_frames=128, width=0.25, batch_size=8, pretrain_iters=500,
                      arm_iters=60, transfer_iters=150, transfer_ngf=16, transfer_n_blocks=3),
    "full": Budget(train_frames=8192, test_frames=1024, width=1.0, batch_size=32, pretrain_iters=20000,
                   arm_iters=5000, transfer_iters=20000, transfer_ngf=64, transfer_n_blocks=9, num_workers=4),
}


@dataclass(frozen=True)
class Run:
    """One ``train_render.py`` process: ``kind`` in transfer / pretrain / finetune / supervised / test."""

    name: str
    kind: str
    overrides: dict
    iters: int
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arm:
    """One row of the result table: a run's predictions of one branch on one test tree."""

    name: str
    label: str
    group: str
    run: str
    branch: str = "pwe"
    tree: str = "clean"
    trained_by: tuple[str, ...] = ()  # the arm's own run (its wall time; the shared pre-training is reported apart)


def _common(b: Budget, paths: dict) -> dict:
    o = {"width": b.width, "batch_size": b.batch_size, "seed": b.seed, "num_workers": b.num_workers,
         "mano_path": paths["mano"], "data_root": paths["clean"], "output_dir": paths["runs"],
         "epoch_test": False, "scheduler": "none", "max_epoch": 1, "log_every": 1, "img_log_every": 10**9,
         "test_views": "1", "transfer_ngf": b.transfer_ngf, "transfer_n_blocks": b.transfer_n_blocks}
    if b.device:
        o["device"] = b.device
    return o


def build_plan(b: Budget, paths: dict) -> tuple[list[Run], list[Arm]]:
    """Runs (in execution order) and the arms scored from them."""
    c = _common(b, paths)
    runs_dir = Path(paths["runs"]) / "nyu"
    ckpt = {n: str(runs_dir / n / "latest.pth") for n in ("pretrain", "synthetic")}
    g = str(runs_dir / "transfer")
    consis = {"transfer": "consis", "transfer_net_path": g}
    arm = {"iters_per_epoch": b.arm_iters, "finetune_dir": ckpt["pretrain"]}
    fine = {**c, **consis, **arm, "phase": "train", "train_stage": "finetune"}
    sup = {**c, **arm, "phase": "train", "train_stage": "supervised", "transfer": "none"}
    thick = {"data_root": paths["thick"]}
    runs = [
        Run("transfer", "transfer", {**c, "phase": "train", "train_stage": "transfer", "transfer": "none",
                                     "transfer_epochs": 1, "transfer_decay_epochs": 0,
                                     "iters_per_epoch": b.transfer_iters}, b.transfer_iters),
        Run("pretrain", "pretrain", {**c, **consis, "phase": "train", "train_stage": "pretrain",
                                     "iters_per_epoch": b.pretrain_iters}, b.pretrain_iters, ("transfer",)),
        Run("synthetic", "pretrain", {**c, **consis, **arm, "phase": "train", "train_stage": "pretrain"},
            b.arm_iters, ("pretrain",)),
        Run("dsf", "finetune", fine, b.arm_iters, ("pretrain",)),
        Run("supervised", "supervised", sup, b.arm_iters, ("pretrain",)),
        Run("no_inter_branch", "finetune", {**fine, "inter_branch": False}, b.arm_iters, ("pretrain",)),
        Run("no_transfer", "finetune", {**fine, "transfer": "none", "transfer_net_path": ""}, b.arm_iters,
            ("pretrain",)),
        Run("one_stage", "finetune", {**fine, "stage_num": 1}, b.arm_iters, ("pretrain",)),
        Run("no_collision", "finetune", {**fine, "coll_weight": 0.0}, b.arm_iters, ("pretrain",)),
        Run("no_part_icp", "finetune", {**fine, "partICP_weight": 0.0}, b.arm_iters, ("pretrain",)),
        Run("synthetic_thick", "test", {**c, **thick, "phase": "test", "load_model": ckpt["synthetic"]}, 0,
            ("synthetic",)),
        Run("dsf_thick", "finetune", {**fine, **thick}, b.arm_iters, ("pretrain",)),
        Run("supervised_thick", "supervised", {**sup, **thick}, b.arm_iters, ("pretrain",)),
    ]
    runs = [Run(r.name, r.kind, {**r.overrides, "run_name": r.name}, r.iters, r.needs) for r in runs]
    arms = [
        Arm("synthetic", "synthetic only", "main", "synthetic", trained_by=("synthetic",)),
        Arm("synthetic_mano", "synthetic only (MANO branch)", "main", "synthetic", branch="mano",
            trained_by=("synthetic",)),
        Arm("dsf", "DSF", "main", "dsf", trained_by=("dsf",)),
        Arm("dsf_mano", "DSF (MANO branch)", "main", "dsf", branch="mano", trained_by=("dsf",)),
        Arm("supervised", "supervised (upper bound)", "main", "supervised", trained_by=("supervised",)),
        Arm("supervised_mano", "supervised (MANO branch)", "main", "supervised", branch="mano",
            trained_by=("supervised",)),
        Arm("mano_only", "MANO branch only (no inter-branch)", "ablation", "no_inter_branch", branch="mano",
            trained_by=("no_inter_branch",)),
        Arm("pwe_only", "pixel branch only (no inter-branch)", "ablation", "no_inter_branch",
            trained_by=("no_inter_branch",)),
        Arm("no_transfer", "no transfer net", "ablation", "no_transfer", trained_by=("no_transfer",)),
        Arm("one_stage", "one stage (stage_num=1)", "ablation", "one_stage", trained_by=("one_stage",)),
        Arm("no_collision", "no collision term", "ablation", "no_collision", trained_by=("no_collision",)),
        Arm("no_part_icp", "no part-aware ICP", "ablation", "no_part_icp", trained_by=("no_part_icp",)),
        Arm("synthetic_thick", "synthetic only", "mismatch", "synthetic_thick", tree="thick",
            trained_by=("synthetic",)),
        Arm("dsf_thick", "DSF", "mismatch", "dsf_thick", tree="thick", trained_by=("dsf_thick",)),
        Arm("supervised_thick", "supervised (upper bound)", "mismatch", "supervised_thick", tree="thick",
            trained_by=("supervised_thick",)),
    ]
    return runs, arms


def with_bn_recalibration(runs: list[Run], arms: list[Arm], paths: dict, batches: int
                          ) -> tuple[list[Run], list[Arm]]:
    """``--bn-recalibration N``: a ``phase=test bn_recalibration=N`` run ``<name>_bn`` for every fine-tuning run's
    last checkpoint (the same numbers as fine-tuning with ``bn_recalibration=N``: training never reads the running
    statistics; tests/test_train_render.py), plus the synthetic-only checkpoint re-scored the same way as a
    control (BN adaptation alone, no fine-tuning). Returns (the extra runs, the arms scored from them)."""
    runs_dir = Path(paths["runs"]) / "nyu"
    fine = {r.name for r in runs if r.kind == "finetune"}
    extra = [Run(f"{r.name}_bn", "test", {**r.overrides, "phase": "test", "load_model": str(runs_dir / r.name /
                                                                                           "latest.pth"),
                                          "bn_recalibration": batches, "run_name": f"{r.name}_bn"}, 0, (r.name,))
             for r in runs if r.name in fine or r.name == "synthetic"]
    new_arms = [dataclasses.replace(a, run=f"{a.run}_bn") if a.run in fine else a for a in arms]
    new_arms += [Arm("synthetic_bn", "synthetic only, BN re-estimated (control, no fine-tuning)", "control",
                     "synthetic_bn", trained_by=("synthetic",)),
                 Arm("synthetic_bn_mano", "synthetic only, BN re-estimated (control; MANO branch)", "control",
                     "synthetic_bn", branch="mano", trained_by=("synthetic",))]
    return extra, new_arms


def overrides_to_argv(overrides: dict) -> list[str]:
    """``key=value`` arguments of ``train_render.py`` (booleans lower-case, tuples comma-joined)."""
    out = []
    for k, v in overrides.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (tuple, list)):
            v = ",".join(str(x) for x in v)
        out.append(f"{k}={v}")
    return out


def final_branch_file(run_dir: Path, branch: str, stage_num: int = 2, view: int = 1) -> Path:
    """The community-format prediction file of a run's last stage and ``branch``."""
    return run_dir / f"predictions_s{stage_num}_{branch}_v{view}.txt"


# ------------------------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------------------------
class Progress:
    """ETA from the planned iterations weighted by kind; the seconds per unit are re-estimated from finished
    runs (plus a fixed start-up / test overhead per run)."""

    def __init__(self, runs: list[Run], cost: dict, overhead_units: float = 3.0):
        self.units = {r.name: r.iters * cost[r.kind] + overhead_units for r in runs}
        self.done: dict[str, float] = {}
        self.t0 = time.time()
        self.rate: float | None = None  # seconds per unit

    def finish(self, name: str, seconds: float) -> None:
        self.done[name] = seconds
        measured = [(self.units[n], s) for n, s in self.done.items() if s > 0]
        if measured:
            self.rate = sum(s for _, s in measured) / sum(u for u, _ in measured)

    def eta(self) -> str:
        if self.rate is None:
            return "ETA: after the first run"
        left = sum(u for n, u in self.units.items() if n not in self.done) * self.rate
        return f"ETA {left / 60:.0f} min"


def _stream(proc: subprocess.Popen, log_path: Path, state: dict) -> None:
    with open(log_path, "w", buffering=1) as log:
        buf = ""
        while True:
            ch = proc.stdout.read(1)
            if not ch:
                break
            log.write(ch)
            if ch in "\r\n":
                if buf.strip():
                    state["last"] = buf.strip()[-110:]
                buf = ""
            else:
                buf += ch


def execute(run: Run, out: Path, progress: Progress, index: int, total: int, heartbeat: float = 30.0,
            threads: int = 0) -> float:
    """Run one ``train_render.py`` process (nice'd by the caller's niceness), logging to its run folder;
    returns its wall seconds. Raises RuntimeError on failure (the log path is in the message)."""
    run_dir = Path(run.overrides["output_dir"]) / "nyu" / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "train_render.py"), *overrides_to_argv(run.overrides)]
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    print(f"[{index}/{total}] {run.name} ({run.kind}, {run.iters} iterations) ... {progress.eta()}", flush=True)
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:  # intra-op threads of each training process (speed only: on a busy machine 1 can be faster)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    state = {"last": ""}
    reader = threading.Thread(target=_stream, args=(proc, run_dir / "bench_log.txt", state), daemon=True)
    reader.start()
    while reader.is_alive():  # the reader ends when the process closes its output
        reader.join(timeout=heartbeat)
        if reader.is_alive():
            print(f"    {run.name}: {time.time() - t0:.0f} s | {state['last']}", flush=True)
    proc.wait()
    seconds = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{run.name} failed (exit {proc.returncode}); log: {run_dir / 'bench_log.txt'}: "
                           f"{state['last']}")
    (run_dir / "done.json").write_text(json.dumps({"seconds": seconds, "iters": run.iters}))
    progress.finish(run.name, seconds)
    bench_elapsed = time.time() - progress.t0
    print(f"    {run.name}: done in {seconds / 60:.1f} min (bench {bench_elapsed / 60:.1f} min, {progress.eta()})",
          flush=True)
    return seconds


def prepare_data(b: Budget, paths: dict) -> None:
    """The stand-in MANO model and the two NYU-format trees (same seed: same scenes, labels and fits)."""
    from dataloader.standin_nyu import ensure_standin_nyu
    from render.standin import write_standin

    if not os.path.isfile(paths["mano"]):
        write_standin(paths["mano"])
    for key, mismatch in (("clean", "none"), ("thick", b.mismatch)):
        t0 = time.time()
        ensure_standin_nyu(paths[key], b.train_frames, b.test_frames, seed=b.seed, mano_path=paths["mano"],
                           views=1, mismatch=mismatch)
        print(f"data: {paths[key]} ({b.train_frames} train + {b.test_frames} test frames, mismatch={mismatch}) "
              f"ready in {time.time() - t0:.0f} s", flush=True)


def score_arms(arms: list[Arm], paths: dict, seconds: dict[str, float]) -> list[ArmResult]:
    """Score every arm from its run's community-format prediction file (failed or missing: left out, reported)."""
    gt = {"clean": tree_gt_uvd(paths["clean"]), "thick": tree_gt_uvd(paths["thick"])}
    runs_dir = Path(paths["runs"]) / "nyu"
    results = []
    for a in arms:
        run_dir = runs_dir / a.run
        stage_num = _stage_num(run_dir)
        f = final_branch_file(run_dir, a.branch, stage_num)
        if not f.is_file():
            print(f"arm {a.name}: no prediction file {f} (run failed or not run)")
            continue
        try:
            m11, m14, succ = score_file(f, gt[a.tree])
        except ValueError as err:  # e.g. a diverged network: implausible predictions
            print(f"arm {a.name}: cannot score {f}: {err}")
            continue
        train_s = sum(seconds.get(r, 0.0) for r in a.trained_by) or None
        results.append(ArmResult(a.name, a.label, a.group, a.branch, a.tree, m11, m14, succ, train_s))
    return results


def _stage_num(run_dir: Path) -> int:
    cfg = run_dir / "config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text()).get("stage_num", 2))
    return 2


def report(out: Path, results: list[ArmResult], paths: dict, mode: str, meta: dict) -> dict:
    summary = summarize({r.name: r for r in results})
    table = format_table(results)
    text = format_summary(summary)
    print("\n" + table + "\n\n" + text)
    (out / "claim_table.md").write_text(table + "\n\n" + text + "\n")
    save_results(out / "claim_results.json", results, summary, meta)
    plot_success(out / "success_curves.png", results, f"DSF claim on the NYU-format stand-in ({mode})")
    plot_ablation(out / "ablations.png", results, title=f"ablations of DSF ({mode}; DSF-11 error, lower is better)")
    scalars = read_scalar_log(Path(paths["runs"]) / "nyu" / "dsf")
    keep = {k: v for k, v in scalars.items() if k.startswith(("loss/", "stat/m2p", "err/"))}
    plot_loss_curves(out / "dsf_loss_curves.png", keep, f"DSF arm: per-term losses (unweighted), M2P selection and "
                     f"train-batch label errors (logging only) per step ({mode})",
                     count_keys=("stat/m2p_selected", "stat/m2p_samples"))
    summary["dsf_diagnostics"] = diagnostics(scalars)
    shared = {k: meta["run_seconds"].get(k) for k in ("transfer", "pretrain")}
    extra = (f"\nshared by every arm: transfer-net training {_minutes(shared['transfer'])}, pre-training "
             f"{_minutes(shared['pretrain'])}; all runs {sum(meta['run_seconds'].values()) / 60:.1f} min; this "
             f"invocation's wall time {meta['wall_seconds'] / 60:.1f} min (finished runs are reused)\n"
             f"DSF arm diagnostics: {json.dumps(summary['dsf_diagnostics'])}")
    print(extra)
    with open(out / "claim_table.md", "a") as f:
        f.write(extra + "\n")
    save_results(out / "claim_results.json", results, summary, meta)
    return summary


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def diagnostics(scalars: dict) -> dict:
    """What the DSF arm's step log says about the failure modes issue 16 names: how often M2P selects pairs, and
    whether the (teacher) stage-2 branches drift on the train batches (label errors are logged, never a loss):
    mean of the first and the last fifth of the steps."""
    out = {}
    if "stat/m2p_selected" in scalars:
        sel = scalars["stat/m2p_selected"][1]
        out["m2p_selected"] = {"steps": int(len(sel)), "steps_with_any": int((sel > 0).sum()),
                               "mean_per_step": round(float(sel.mean()), 2), "max": float(sel.max())}
    # the M2P gates: a sample needs d2m < m2p_fit_threshold (1e-3 norm^2, RMS ~4 mm) and a depth agreement
    # < m2p_depth_threshold (0.04); the logged d2m / m2d (batch means) show how far the fits are from them
    for key in ("err/pwe_s2", "err/mano_s2", "err/pwe_s1", "err/mano_s1", "loss/real/d2m/s2", "loss/real/m2d/s2"):
        if key in scalars:
            v = scalars[key][1]
            k = max(len(v) // 5, 1)
            out[key] = {"first": float(f"{v[:k].mean():.4g}"), "last": float(f"{v[-k:].mean():.4g}")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smoke version (< 25 min on the 2-core CPU)")
    g.add_argument("--full", action="store_true", help="official width on a GPU")
    g.add_argument("--smoke", action="store_true", help="pipeline check with 1-2 iterations per run (no result)")
    ap.add_argument("--out", default=None, help="bench folder (default bench_runs/dsf_claim/<mode>)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (commands) and exit")
    ap.add_argument("--fresh", action="store_true", help="re-run runs that already finished")
    ap.add_argument("--threads", type=int, default=0, help="OMP/MKL threads per training process (0: torch's "
                    "default)")
    ap.add_argument("--bn-recalibration", type=int, default=0, metavar="N",
                    help="also score every fine-tuning arm with BN statistics re-estimated on N real train batches "
                    "(bn_recalibration=N; report in <out>/bn_recalibration)")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "smoke" if args.smoke else "default"
    b = MODES[mode]
    out = Path(args.out or REPO / "bench_runs" / "dsf_claim" / mode).resolve()
    paths = {"mano": str(out / "data" / "MANO_RIGHT.pkl"), "clean": str(out / "data" / "nyu"),
             "thick": str(out / "data" / f"nyu_{b.mismatch}"), "runs": str(out / "runs")}
    runs, arms = build_plan(b, paths)
    bn_runs, bn_arms = with_bn_recalibration(runs, arms, paths, args.bn_recalibration) if args.bn_recalibration \
        else ([], [])
    runs = runs + bn_runs
    print(f"DSF claim benchmark, mode {mode}: {b}")
    if args.dry_run:
        for r in runs:
            print(f"{r.name}: train_render.py {' '.join(overrides_to_argv(r.overrides))}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    started, load0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    prepare_data(b, paths)
    progress = Progress(runs, b.cost)
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for i, r in enumerate(runs, 1):
        run_dir = Path(paths["runs"]) / "nyu" / r.name
        done = run_dir / "done.json"
        if any(n in failed for n in r.needs):
            failed[r.name] = f"skipped: needs {[n for n in r.needs if n in failed]}"
            print(f"[{i}/{len(runs)}] {r.name}: {failed[r.name]}")
            continue
        if done.is_file() and not args.fresh:
            seconds[r.name] = float(json.loads(done.read_text())["seconds"])
            progress.finish(r.name, seconds[r.name])
            print(f"[{i}/{len(runs)}] {r.name}: already done ({seconds[r.name] / 60:.1f} min), reused")
            continue
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        try:
            seconds[r.name] = execute(r, out, progress, i, len(runs), threads=args.threads)
        except RuntimeError as err:
            failed[r.name] = str(err)
            print(f"    FAILED: {err}", flush=True)
    wall = time.time() - t0
    results = score_arms(arms, paths, seconds)
    meta = {"mode": mode, "budget": {k: v for k, v in b.__dict__.items()}, "wall_seconds": wall,
            "threads": args.threads or "torch default", "started": started,
            "load_average_start_end": [round(load0[1], 1), round(os.getloadavg()[1], 1)],
            "run_seconds": seconds, "failed": failed, "machine": f"{platform.node()} {platform.machine()} "
            f"{os.cpu_count()} CPUs, {platform.platform()}", "command": " ".join(["bench/dsf_claim.py", *(argv or
                                                                                   sys.argv[1:])])}
    report(out, results, paths, mode, meta)
    if bn_arms:
        bn_out = out / "bn_recalibration"
        bn_out.mkdir(exist_ok=True)
        print(f"\n--- fine-tuning arms scored with BN statistics re-estimated on {args.bn_recalibration} real train "
              f"batches (bn_recalibration; {bn_out}) ---")
        report(bn_out, score_arms(bn_arms, paths, seconds), paths, f"{mode}, bn_recalibration={args.bn_recalibration}",
               meta)
    print(f"\nbench wall time {wall / 60:.1f} min; results in {out}")
    if failed:
        print("failed runs: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return 0 if results and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
