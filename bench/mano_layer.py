"""Speed of the MANO layer (CPU, 2 threads) against the tests' float64 numpy MANO, measured in the same run.

Run from the repository root: ``.venv/bin/python bench/mano_layer.py``. One row per batch size: the numpy
reference time, then each torch variant's time and its speed-up over the reference (reference / torch).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from render.mano_io import ManoModel, load_mano
from render.mano_layer import DSF_GLOBAL_SCALE, ManoLayer
from render.mano_params import LAYOUT_AXIS_ANGLE as LAYOUT
from render.standin import load_standin
from bench.timing import median_seconds
from tests.reference import numpy_mano  # the independent float64 reference

BATCHES = (32, 1024)


def load_model() -> ManoModel:
    """The oracle's random MANO-format model if ../shared is present, else the procedural stand-in."""
    oracle = REPO.parent / "shared" / "oracle" / "mano_synth_model.npz"
    return load_mano(oracle) if oracle.is_file() else load_standin()


def time_batch(model: ManoModel, layer: ManoLayer, batch: int, rng: np.random.Generator) -> dict[str, float]:
    """Median seconds of the numpy reference and of three torch variants for one batch size."""
    repeats = 10 if batch <= 64 else 3
    params = rng.normal(0, 0.5, (batch, LAYOUT.dim)).astype(np.float32)
    params[:, LAYOUT.scale] = 1.0
    finger_pose = params[:, LAYOUT.pose_pca] @ model.hands_components + model.hands_mean
    full_pose = np.concatenate([params[:, LAYOUT.global_orient], finger_pose], axis=1).astype(np.float64)
    betas = params[:, LAYOUT.betas].astype(np.float64)
    pose_t = torch.as_tensor(full_pose, dtype=torch.float32)
    betas_t = torch.as_tensor(betas, dtype=torch.float32)
    params_t = torch.as_tensor(params)

    def fwd_bwd():
        p = params_t.clone().requires_grad_()
        out = layer.forward_dsf(p, global_scale=DSF_GLOBAL_SCALE)
        (out.vertices.square().mean() + out.joints.square().mean()).backward()

    times = {"ref": median_seconds(lambda: numpy_mano(model, full_pose, betas), repeats)}
    with torch.no_grad():
        times["forward"] = median_seconds(lambda: layer(pose_t[:, :3], pose_t[:, 3:], betas_t), repeats)
        times["forward_dsf"] = median_seconds(lambda: layer.forward_dsf(params_t), repeats)
    times["dsf fwd+bwd"] = median_seconds(fwd_bwd, repeats)
    return times


def main() -> None:
    torch.set_num_threads(2)
    model = load_model()
    layer = ManoLayer(model)
    print(f"MANO layer benchmark: CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"model {Path(model.source).name}")
    variants = ("forward", "forward_dsf", "dsf fwd+bwd")
    header = f"{'batch':>6} | {'numpy f64 ref':>13} | " + " | ".join(f"{v:>11} {'x ref':>6}" for v in variants)
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        t = time_batch(model, layer, batch, rng)
        cells = " | ".join(f"{1e3 * t[v]:>8.2f} ms {t['ref'] / t[v]:>5.1f}x" for v in variants)
        print(f"{batch:>6} | {1e3 * t['ref']:>10.2f} ms | {cells}")
    print("x ref = numpy reference time / torch time (higher = faster); the reference is forward-only float64.")


if __name__ == "__main__":
    main()
