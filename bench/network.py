"""Inference speed of the DSF pose network on the CPU (2 threads).

Prints, per batch size (1 and 32) and execution variant: seconds per batch, frames per second for stage 1 only and
for both stages (stage 2 includes the remap rendering), the share of the two-stage time spent rendering, the
network's FLOPs per frame (forward hooks on Conv2d / ConvTranspose2d / Linear: multiply-adds x 2) and the achieved
FLOP/s as a fraction of this CPU's dense float32 matmul rate (torch.mm 2048 x 2048) measured in the same run.
Targets: two-stage forward >= 50 % of the matmul rate; rendering < 10 % of the two-stage time.

Timing is "best of N" for both the network and the matmul reference, sampled interleaved, so that load from other
processes on a shared machine biases neither side much. Because a busy machine can still spoil every sample, the
same ratio is also given per CPU second ("cpu %mm": FLOPs per process CPU-second of the network over the same for
the matmul), which waiting for a core does not inflate (spin-waiting threads still do).

The renderer is ``render.hand_renderer.HandRenderer`` (if it cannot be built, an empty zero-cost stand-in and
rendering is reported as not measured); the MANO model is the random oracle model of ``../shared/oracle``
(MANO-format, same size as MANO). Because an untrained network predicts
a collapsed hand (scale ~ 0, almost no pixels), the renderer is fed realistic MANO vectors (the oracle's network-
convention parameters) instead of the network's own, so that the rendering cost is representative.

Usage: ``.venv/bin/python bench/network.py [--batches 1 32] [--reps 5 3] [--width 1.0] [--all-variants]``
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from model import build_pose_net  # noqa: E402
from model.fuse import fold_batchnorm, prepare_for_inference  # noqa: E402
from util.camera import NYU_CAMERA  # noqa: E402

SHARED = REPO.parent / "shared"
MM_SIZE = 2048


# ----------------------------------------------------------------------------------------------------
# references and counters
# ----------------------------------------------------------------------------------------------------
class MatmulReference:
    """Best-of-N time of one float32 ``torch.mm`` of two 2048 x 2048 matrices (sampled between measurements)."""

    def __init__(self, n: int = MM_SIZE):
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.flop = 2.0 * n ** 3
        self.best, self.best_cpu, self.samples = float("inf"), float("inf"), 0
        torch.mm(self.a, self.b)  # warm-up

    def sample(self, k: int = 1) -> None:
        for _ in range(k):
            t, c = time.perf_counter(), time.process_time()
            torch.mm(self.a, self.b)
            self.best = min(self.best, time.perf_counter() - t)
            self.best_cpu = min(self.best_cpu, time.process_time() - c)
            self.samples += 1

    @property
    def rate(self) -> float:
        """FLOP/s (wall clock)."""
        return self.flop / self.best

    @property
    def cpu_rate(self) -> float:
        """FLOP per process CPU-second."""
        return self.flop / self.best_cpu


def count_flops(net: nn.Module, run: Callable[[], object]) -> float:
    """FLOPs (2 x multiply-adds) of conv / transposed conv / linear layers during one call of ``run``."""
    total = [0.0]

    def hook(m: nn.Module, inputs, output) -> None:
        x = inputs[0]
        if isinstance(m, nn.ConvTranspose2d):  # every input pixel scatters a k x k x C_out patch
            total[0] += 2.0 * x.numel() * m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Conv2d):
            total[0] += 2.0 * output.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += 2.0 * x.numel() * m.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


# ----------------------------------------------------------------------------------------------------
# renderers
# ----------------------------------------------------------------------------------------------------
class NullRenderer:
    """Zero-cost stand-in (empty render) used when no MANO model / renderer can be built."""

    def render_prediction(self, theta, center_xyz, cube):
        b, j = theta.shape[0], 21
        return SimpleNamespace(depth=torch.ones(b, 1, 128, 128), joints_uvd=torch.zeros(b, j, 3))


class TimedRenderer:
    """Renders realistic MANO vectors (not the untrained network's) and accumulates the time spent."""

    def __init__(self, inner, thetas: torch.Tensor | None):
        self.inner, self.thetas, self.seconds = inner, thetas, 0.0

    def render_prediction(self, theta, center_xyz, cube):
        if self.thetas is not None:
            reps = -(-theta.shape[0] // self.thetas.shape[0])
            theta = self.thetas.repeat(reps, 1)[: theta.shape[0]].to(theta)
        t = time.perf_counter()
        out = self.inner.render_prediction(theta, center_xyz, cube)
        self.seconds += time.perf_counter() - t
        return out


def make_renderer() -> tuple[TimedRenderer, str]:
    camera = NYU_CAMERA.as_tuple()
    try:
        from render.mano_io import load_mano
        from render.mano_layer import ManoLayer

        mano = ManoLayer(load_mano(str(SHARED / "oracle" / "mano_synth_model.npz")))
        thetas = torch.from_numpy(np.load(SHARED / "oracle" / "mano_forward.npz")["params_b"])
    except (ImportError, OSError, ValueError) as err:
        return TimedRenderer(NullRenderer(), None), f"NOT MEASURED (no MANO layer / model: {err})"
    try:
        from render.hand_renderer import HandRenderer
    except ImportError as err:
        return TimedRenderer(NullRenderer(), None), f"NOT MEASURED (render.hand_renderer unavailable: {err})"
    return TimedRenderer(HandRenderer(mano, camera), thetas), "render.hand_renderer.HandRenderer"


# ----------------------------------------------------------------------------------------------------
# execution variants
# ----------------------------------------------------------------------------------------------------
def _variants(net: nn.Module, all_variants: bool) -> dict[str, tuple[nn.Module, bool, Callable]]:
    """name -> (module, channels_last input?, context factory). All in eval mode."""
    out = {"eval+no_grad": (net, False, torch.no_grad)}
    if all_variants:
        out["eval+inference_mode"] = (net, False, torch.inference_mode)
        out["channels_last"] = (copy.deepcopy(net).to(memory_format=torch.channels_last), True,
                                torch.inference_mode)
        out["BN folded"] = (fold_batchnorm(net), False, torch.inference_mode)

        @contextlib.contextmanager
        def no_mkldnn():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the flags context also toggles (unavailable) TF32
                with torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
                    yield

        out["mkldnn off"] = (net, False, no_mkldnn)
    out["prepare_for_inference"] = (prepare_for_inference(net), False, torch.inference_mode)
    return out


def measure(module, depth, center, cube, renderer: TimedRenderer, stages: int, ctx, reps: int,
            ref: MatmulReference) -> tuple[float, float, float]:
    """Best-of-``reps`` wall seconds per batch (after one warm-up), the render seconds of that best run and the
    best process CPU seconds."""
    best, best_render, best_cpu = float("inf"), 0.0, float("inf")
    for rep in range(reps + 1):
        ref.sample()
        renderer.seconds = 0.0
        t, c = time.perf_counter(), time.process_time()
        with ctx():
            module(depth, center, cube, renderer=renderer, num_stages=stages)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        if rep > 0:
            best_cpu = min(best_cpu, dc)
            if dt < best:
                best, best_render = dt, renderer.seconds
    return best, best_render, best_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--reps", type=int, nargs="+", default=[5, 3], help="timed repetitions per batch size")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--all-variants", action="store_true",
                        help="also time inference_mode / channels_last / BN folding alone / mkldnn off "
                             "(default: only at batch 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    reps = dict(zip(args.batches, args.reps + [args.reps[-1]] * len(args.batches)))

    net = build_pose_net(width=args.width).eval()
    renderer, render_label = make_renderer()
    ref = MatmulReference()
    ref.sample(3)

    def inputs(b: int, channels_last: bool):
        depth = torch.rand(b, 1, 128, 128) * 2 - 1
        center = torch.tensor([[20.0, -30.0, 700.0]]).repeat(b, 1)
        cube = torch.full((b, 3), 250.0)
        return depth.contiguous(memory_format=torch.channels_last) if channels_last else depth, center, cube

    d1, c1, s1 = inputs(1, False)
    flop1 = count_flops(net, lambda: net(d1, c1, s1, renderer=renderer, num_stages=1))
    flop2 = count_flops(net, lambda: net(d1, c1, s1, renderer=renderer, num_stages=2))
    print(f"DSF pose network, width {args.width}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"renderer: {render_label}")
    print(f"network FLOPs per frame: stage 1 {flop1 / 1e9:.2f} GFLOP, both stages {flop2 / 1e9:.2f} GFLOP "
          f"(conv / transposed conv / linear; multiply-adds x 2)")

    rows = []
    for b in args.batches:
        for name, (module, chl, ctx) in _variants(net, args.all_variants or b == 1).items():
            depth, center, cube = inputs(b, chl)
            t1, _, c1 = measure(module, depth, center, cube, renderer, 1, ctx, reps[b], ref)
            t2, tr, c2 = measure(module, depth, center, cube, renderer, 2, ctx, reps[b], ref)
            rows.append((b, name, t1, c1, t2, tr, c2))
    rate, cpu_rate = ref.rate, ref.cpu_rate
    print(f"reference: torch.mm {MM_SIZE}x{MM_SIZE} float32 = {rate / 1e9:.1f} GFLOP/s wall, "
          f"{cpu_rate / 1e9:.1f} GFLOP per CPU-second (best of {ref.samples} samples)")
    print()
    head = (f"{'batch':>5}  {'variant':<22} {'stage1 fps':>10} {'%mm':>5} {'cpu%mm':>6} | {'2-stage fps':>11} "
            f"{'s/batch':>8} {'%mm':>5} {'net%mm':>6} {'cpu%mm':>6} {'render':>7}")
    print(head)
    print("-" * len(head))
    measured = not isinstance(renderer.inner, NullRenderer)
    for b, name, t1, c1, t2, tr, c2 in rows:
        render = f"{100 * tr / t2:6.1f}%" if measured else "    n/m"
        print(f"{b:>5}  {name:<22} {b / t1:>10.2f} {100 * b * flop1 / t1 / rate:>4.0f}% "
              f"{100 * b * flop1 / c1 / cpu_rate:>5.0f}% | {b / t2:>11.2f} {t2:>8.3f} "
              f"{100 * b * flop2 / t2 / rate:>4.0f}% {100 * b * flop2 / max(t2 - tr, 1e-9) / rate:>5.0f}% "
              f"{100 * b * flop2 / c2 / cpu_rate:>5.0f}% {render}")
    print()
    print("%mm: network FLOP/s over matmul FLOP/s, wall clock (2-stage: rendering included; net%mm: rendering time"
          " excluded);\ncpu%mm: the same per process CPU-second. render: share of the 2-stage time spent in "
          "render_prediction.")
    print("targets: 2-stage %mm >= 50 %, render < 10 %. n/m = rendering not measured.")


if __name__ == "__main__":
    main()
