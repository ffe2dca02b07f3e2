"""Evaluate synthetic -> real translators: the consistency metric (docs/method.md §12) and a domain distance to
real crops.

``python -m model.transfer_eval --generator ours=<run or .pth> [--generator plain=<...>] [--batches 8]
[--batch-size 16] [--json out.json] [config key=value ...]``

The config overrides choose the data exactly as training does (``data_root``, ``mano_path``, ``dataset``, the
synthetic keys; domain A from :func:`dataloader.builders.build_synthetic` with stage ``transfer``, the real
reference from the data set's **test** split, held out from translator training). The identity map (raw synthetic
crops) is always reported, and the real train split as the floor of the distance.

Reported per translator (docs/DEVIATIONS.md "Consis-CycleGAN" says why these):

- ``consistency``: mean over crops of sum |G(x) - x| / #(x < 0.99 and G(x) < 0.99) (the official comparison
  routine, docs/method.md §12; lower = hand depths kept); ``consistency_masked``: the same with the numerator
  restricted to that intersection;
- ``domain_distance``: mean over :data:`FEATURES` of the 1-D Wasserstein distance between the feature's
  distribution on the translated crops and on real crops, each divided by the feature's standard deviation on the
  real crops (0 = same distribution). The features measure what a depth sensor adds to a clean render: surface
  roughness (noise and disparity quantisation), holes inside the silhouette, ragged silhouette edges, and the
  foreground extent (forearm, clutter).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
import torch.nn.functional as F

from model.cyclegan import FG_THRESHOLD, consistency_metric

#: per-crop statistics of the domain distance (see :func:`crop_features`)
FEATURES = ("fg_fraction", "roughness_mm", "hole_fraction", "edge_ratio")


# ----------------------------------------------------------------------------------------------------
# generators of any width
# ----------------------------------------------------------------------------------------------------
def load_generator(path: str | Path) -> nn.Module:
    """A CycleGAN ResNet generator of any width / depth from a plain state dict (``latest_net_G_A.pth``, or a
    run folder holding one), strictly, frozen in eval mode. The default size (64, 9 blocks) is the one DSF's
    pre-training loads (:func:`model.transfer_net.load_transfer_generator`); smaller ones come from benchmarks.
    """
    from model.checkpoint import CheckpointError, as_state_dict, check_state_dict, read_checkpoint
    from model.transfer_net import build_transfer_generator

    path = Path(path)
    if path.is_dir():
        path = path / "latest_net_G_A.pth"
    expected = "a CycleGAN ResNet generator state dict (latest_net_G_A.pth, keys 'model.<i>.')"
    state = as_state_dict(read_checkpoint(path, expected=expected), source=str(path), expected=expected)
    first = state.get("model.1.weight")
    if first is None or first.ndim != 4:
        raise CheckpointError(f"{path}: expected {expected}; no 4-d 'model.1.weight'")
    blocks = {k.split(".")[1] for k in state if ".conv_block." in k}
    net = build_transfer_generator(ngf=int(first.shape[0]), n_blocks=len(blocks))
    check_state_dict(net, state, source=str(path), expected=expected)
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.eval()


# ----------------------------------------------------------------------------------------------------
# per-crop statistics and the distance
# ----------------------------------------------------------------------------------------------------
def _shift(mask: Tensor, dy: int, dx: int, fill: bool) -> Tensor:
    """mask (B, 1, H, W) bool shifted so that out[i, j] = mask[i + dy, j + dx] (``fill`` outside)."""
    padded = F.pad(mask.float(), (1, 1, 1, 1), value=float(fill))
    H, W = mask.shape[-2:]
    return padded[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W] > 0.5


def crop_features(depth: Tensor, half_cube_mm: float = 125.0, threshold: float = FG_THRESHOLD) -> dict[str, Tensor]:
    """Per-crop statistics of (B, 1, S, S) normalised crops (foreground = depth < threshold).

    Returns {name: (B,) float64}: ``fg_fraction`` (foreground pixels / all), ``roughness_mm`` (median |4-neighbour
    Laplacian| in mm over interior foreground pixels: depth noise, quantisation steps; NaN without interior),
    ``hole_fraction`` (background pixels inside the 5 x 5 morphological closing of the foreground / its area:
    holes and edge dropouts; NaN without foreground), ``edge_ratio`` (silhouette boundary pixels / sqrt(foreground
    pixels): ragged edges; NaN without foreground).
    """
    d = depth.double()
    fg = d < threshold
    n = fg.flatten(1).sum(1).double()
    neighbours = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    interior = fg.clone()
    for dy, dx in neighbours:
        interior &= _shift(fg, dy, dx, False)
    padded = F.pad(d, (1, 1, 1, 1), mode="replicate")
    H, W = d.shape[-2:]
    lap = 4 * d - sum(padded[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W] for dy, dx in neighbours)
    rough = []
    for b in range(d.shape[0]):
        vals = lap[b][interior[b]].abs() * half_cube_mm
        rough.append(vals.median() if vals.numel() else torch.tensor(float("nan"), dtype=torch.float64))
    closed = -F.max_pool2d(-F.max_pool2d(fg.double(), 5, 1, 2), 5, 1, 2) > 0.5
    holes = (closed & ~fg).flatten(1).sum(1).double() / closed.flatten(1).sum(1).double()
    boundary = fg & ~interior
    nan = torch.full_like(n, float("nan"))
    return {"fg_fraction": n / fg[0].numel(), "roughness_mm": torch.stack(rough),
            "hole_fraction": torch.where(n > 0, holes, nan),
            "edge_ratio": torch.where(n > 0, boundary.flatten(1).sum(1).double() / n.sqrt(), nan)}


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """W1 distance between two 1-D empirical distributions (NaNs dropped): the integral of |F_a - F_b|."""
    a, b = np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)])
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    grid.sort()
    fa = np.searchsorted(a, grid[:-1], side="right") / len(a)
    fb = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def domain_distance(features: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, float]:
    """{feature: W1(features, real) / std(real)} for every feature in :data:`FEATURES`, plus ``mean`` of them."""
    out = {}
    for name in FEATURES:
        scale = float(np.nanstd(real[name]))
        out[name] = wasserstein_1d(features[name], real[name]) / (scale if scale > 0 else 1.0)
    out["mean"] = float(np.mean([out[name] for name in FEATURES]))
    return out


# ----------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------
def _concat(parts: list[dict[str, Tensor]]) -> dict[str, np.ndarray]:
    return {k: torch.cat([p[k] for p in parts]).cpu().numpy() for k in parts[0]}


@torch.no_grad()
def evaluate_translators(generators: dict[str, nn.Module | None], synthetic_batches: Sequence[Tensor],
                         real_crops: Sequence[Tensor], floor_crops: Sequence[Tensor] = (),
                         half_cube_mm: float = 125.0) -> dict[str, dict]:
    """Consistency metrics and domain distance of each translator (None = identity) on the same synthetic crops.

    Args:
        generators: {name: G or None}; each maps (B, 1, S, S) -> (B, 1, S, S) on the crops' device.
        synthetic_batches: domain-A batches (B, 1, S, S).
        real_crops: batches of the real reference set.
        floor_crops: optional batches of another real set (reported as ``real (other split)``: the distance floor).
    Returns:
        {name: {"consistency", "consistency_masked", "domain_distance": {feature: d, "mean": d}, "n"}}.
    """
    real = _concat([crop_features(r, half_cube_mm) for r in real_crops])
    report = {}
    for name, g in generators.items():
        feats, consis, masked, n = [], [], [], 0
        for x in synthetic_batches:
            y = x if g is None else g(x)
            feats.append(crop_features(y, half_cube_mm))
            consis.append(float(consistency_metric(x, y)) * x.shape[0])
            masked.append(float(consistency_metric(x, y, region="intersection")) * x.shape[0])
            n += x.shape[0]
        report[name] = {"consistency": sum(consis) / n, "consistency_masked": sum(masked) / n,
                        "domain_distance": domain_distance(_concat(feats), real), "n": n}
    if floor_crops:
        report["real (other split)"] = {"consistency": float("nan"), "consistency_masked": float("nan"),
                                        "domain_distance": domain_distance(_concat(
                                            [crop_features(r, half_cube_mm) for r in floor_crops]), real),
                                        "n": int(sum(r.shape[0] for r in floor_crops))}
    return report


def format_report(report: dict[str, dict]) -> str:
    """A Markdown table: one row per translator."""
    head = ("| translator | consistency (method §12) | consistency, masked | domain distance | "
            + " | ".join(FEATURES) + " |")
    lines = [head, "|" + "---|" * (4 + len(FEATURES))]
    for name, r in report.items():
        d = r["domain_distance"]
        lines.append(f"| {name} | {_fmt(r['consistency'])} | {_fmt(r['consistency_masked'])} | {_fmt(d['mean'])} | "
                     + " | ".join(_fmt(d[f]) for f in FEATURES) + " |")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def collect_crops(cfg, *, batches: int, batch_size: int, device: torch.device | str = "cpu"
                  ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """(synthetic batches, real test crops, real train crops) chosen by the Config, deterministic for cfg.seed.

    The synthetic crops come from the transfer stage's source with a seed offset (not the training stream).
    """
    import dataclasses

    from dataloader.builders import build_real_loader, build_synthetic

    syn = build_synthetic(dataclasses.replace(cfg, seed=cfg.seed + 99991), device, "transfer", batch_size=batch_size)
    synthetic = [syn.next_batch()["depth"].float() for _ in range(batches)]
    plain = dataclasses.replace(cfg, augment=False)
    real = {}
    for split in ("test", "train"):
        loader = build_real_loader(plain, split, train=False, labels=False, batch_size=batch_size)
        crops, total = [], 0
        for batch in loader:
            crops.append(batch["depth"].float().to(device))
            total += batch["depth"].shape[0]
            if total >= batches * batch_size:
                break
        real[split] = crops
    return synthetic, real["test"], real["train"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Other arguments are config overrides (key=value), e.g. data_root=... "
                                        "mano_path=...")
    ap.add_argument("--generator", action="append", default=[], metavar="NAME=PATH",
                    help="a translator to evaluate: run folder or latest_net_G_A.pth (repeatable)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default="", help="also write the report here")
    args, rest = ap.parse_known_args(argv)
    from config import ConfigError, load_config

    try:
        cfg = load_config(rest)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    generators: dict[str, nn.Module | None] = {"identity (raw synthetic)": None}
    for item in args.generator:
        name, sep, path = item.partition("=")
        if not sep:
            print(f"error: --generator expects NAME=PATH, got {item!r}", file=sys.stderr)
            return 2
        generators[name] = load_generator(path)
    synthetic, real_test, real_train = collect_crops(cfg, batches=args.batches, batch_size=args.batch_size)
    report = evaluate_translators(generators, synthetic, real_test, real_train, half_cube_mm=cfg.cube / 2)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
