"""Inference speed of the DSF pose network on the CPU (2 threads) or a CUDA GPU.

Prints, per batch size (1 and 32) and execution variant: seconds per batch, frames per second for stage 1 only and
for both stages (stage 2 includes the remap rendering), the share of the two-stage time spent rendering, the
network's FLOPs per frame (forward hooks on Conv2d / ConvTranspose2d / Linear: multiply-adds x 2) and the achieved
FLOP/s as a fraction of the same device's dense float32 matmul rate (torch.mm, 2048 x 2048 on the CPU, 8192 x 8192
on a GPU) measured in the same run.
Targets: CPU - two-stage forward >= 50 % of the matmul rate, rendering < 10 % of the two-stage time;
CUDA - two-stage forward >= 1,000 frames/s at batch 32.

Timing is "best of N" for both the network and the matmul reference, sampled interleaved, so that load from other
processes on a shared machine biases neither side much. On CUDA every timed region is bracketed by
``torch.cuda.synchronize()`` (kernels run asynchronously; the renderer's share too). On the CPU, because a busy
machine can still spoil every sample, the same ratio is also given per CPU second ("cpu %mm": FLOPs per process
CPU-second of the network over the same for the matmul), which waiting for a core does not inflate (spin-waiting
threads still do); those columns are left out on CUDA, where host CPU time says nothing about the GPU.

The renderer is ``render.hand_renderer.HandRenderer`` (if it cannot be built, an empty zero-cost stand-in and
rendering is reported as not measured); the MANO model is the random oracle model of ``../shared/oracle``
(MANO-format, same size as MANO). Because an untrained network predicts
a collapsed hand (scale ~ 0, almost no pixels), the renderer is fed realistic MANO vectors (the oracle's network-
convention parameters) instead of the network's own, so that the rendering cost is representative.

Usage: ``.venv/bin/python bench/network.py [--device cpu|cuda] [--batches 1 32] [--reps 5 3] [--width 1.0]
[--all-variants]`` (default device: cuda when available, else cpu).
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
MM_SIZE = {"cpu": 2048, "cuda": 8192}  # the GPU needs a larger product for a stable, saturating reference


def sync(device: torch.device) -> None:
    """Wait for queued kernels on a CUDA device (timings must cover the work, not its launch); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------
# references and counters
# ----------------------------------------------------------------------------------------------------
class MatmulReference:
    """Best-of-N time of one float32 ``torch.mm`` of two n x n matrices on ``device`` (sampled between
    measurements)."""

    def __init__(self, device: torch.device, n: int | None = None):
        self.device = device
        self.n = MM_SIZE[device.type] if n is None else n
        self.a = torch.randn(self.n, self.n, device=device)
        self.b = torch.randn(self.n, self.n, device=device)
        self.flop = 2.0 * self.n ** 3
        self.best, self.best_cpu, self.samples = float("inf"), float("inf"), 0
        torch.mm(self.a, self.b)  # warm-up (and cuBLAS initialisation on a GPU)
        sync(device)

    def sample(self, k: int = 1) -> None:
        for _ in range(k):
            sync(self.device)
            t, c = time.perf_counter(), time.process_time()
            torch.mm(self.a, self.b)
            sync(self.device)
            self.best = min(self.best, time.perf_counter() - t)
            self.best_cpu = min(self.best_cpu, time.process_time() - c)
            self.samples += 1

    @property
    def rate(self) -> float:
        """FLOP/s (wall clock)."""
        return self.flop / self.best

    @property
    def cpu_rate(self) -> float:
        """FLOP per process CPU-second (meaningful on the CPU only)."""
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
        return SimpleNamespace(depth=torch.ones(b, 1, 128, 128, device=theta.device),
                               joints_uvd=torch.zeros(b, j, 3, device=theta.device))


class TimedRenderer:
    """Renders realistic MANO vectors (not the untrained network's) and accumulates the time spent."""

    def __init__(self, inner, thetas: torch.Tensor | None, device: torch.device):
        self.inner, self.thetas, self.device, self.seconds = inner, thetas, device, 0.0

    def render_prediction(self, theta, center_xyz, cube):
        if self.thetas is not None:
            reps = -(-theta.shape[0] // self.thetas.shape[0])
            theta = self.thetas.repeat(reps, 1)[: theta.shape[0]].to(theta)
        sync(self.device)  # the network's queued stage-1 kernels belong to the network, not to rendering
        t = time.perf_counter()
        out = self.inner.render_prediction(theta, center_xyz, cube)
        sync(self.device)
        self.seconds += time.perf_counter() - t
        return out


def make_renderer(device: torch.device) -> tuple[TimedRenderer, str]:
    camera = NYU_CAMERA.as_tuple()
    try:
        from render.mano_io import load_mano
        from render.mano_layer import ManoLayer

        mano = ManoLayer(load_mano(str(SHARED / "oracle" / "mano_synth_model.npz")))
        thetas = torch.from_numpy(np.load(SHARED / "oracle" / "mano_forward.npz")["params_b"])
    except (ImportError, OSError, ValueError) as err:
        return TimedRenderer(NullRenderer(), None, device), f"NOT MEASURED (no MANO layer / model: {err})"
    try:
        from render.hand_renderer import HandRenderer
    except ImportError as err:
        return (TimedRenderer(NullRenderer(), None, device),
                f"NOT MEASURED (render.hand_renderer unavailable: {err})")
    renderer = HandRenderer(mano, camera).to(device)
    return TimedRenderer(renderer, thetas.to(device), device), "render.hand_renderer.HandRenderer"


# ----------------------------------------------------------------------------------------------------
# execution variants
# ----------------------------------------------------------------------------------------------------
def _variants(net: nn.Module, all_variants: bool, device: torch.device) -> dict[str, tuple[nn.Module, bool, Callable]]:
    """name -> (module, channels_last input?, context factory). All in eval mode; "mkldnn off" on the CPU only."""
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

        if device.type == "cpu":
            out["mkldnn off"] = (net, False, no_mkldnn)
    out["prepare_for_inference"] = (prepare_for_inference(net), False, torch.inference_mode)
    return out


def measure(module, depth, center, cube, renderer: TimedRenderer, stages: int, ctx, reps: int,
            ref: MatmulReference) -> tuple[float, float, float]:
    """Best-of-``reps`` wall seconds per batch (after one warm-up, which also lets cuDNN pick its algorithms), the
    render seconds of that best run and the best process CPU seconds."""
    best, best_render, best_cpu = float("inf"), 0.0, float("inf")
    for rep in range(reps + 1):
        ref.sample()
        renderer.seconds = 0.0
        sync(depth.device)
        t, c = time.perf_counter(), time.process_time()
        with ctx():
            module(depth, center, cube, renderer=renderer, num_stages=stages)
        sync(depth.device)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        if rep > 0:
            best_cpu = min(best_cpu, dc)
            if dt < best:
                best, best_render = dt, renderer.seconds
    return best, best_render, best_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the network, the renderer and the matmul reference run "
                             "(default: cuda when available, else cpu)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--reps", type=int, nargs="+", default=None,
                        help="timed repetitions per batch size (default: 5 3 on cpu, 20 20 on cuda)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--all-variants", action="store_true",
                        help="also time inference_mode / channels_last / BN folding alone / mkldnn off (cpu) "
                             "(default: only at batch 1)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch build")
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if on_gpu:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest algorithms (warm-up)
    rep_list = args.reps if args.reps is not None else ([20, 20] if on_gpu else [5, 3])
    reps = dict(zip(args.batches, rep_list + [rep_list[-1]] * len(args.batches)))

    net = build_pose_net(width=args.width).eval().to(device)
    renderer, render_label = make_renderer(device)
    ref = MatmulReference(device)
    ref.sample(3)

    def inputs(b: int, channels_last: bool):
        depth = torch.rand(b, 1, 128, 128, device=device) * 2 - 1
        center = torch.tensor([[20.0, -30.0, 700.0]], device=device).repeat(b, 1)
        cube = torch.full((b, 3), 250.0, device=device)
        return depth.contiguous(memory_format=torch.channels_last) if channels_last else depth, center, cube

    d1, c1, s1 = inputs(1, False)
    flop1 = count_flops(net, lambda: net(d1, c1, s1, renderer=renderer, num_stages=1))
    flop2 = count_flops(net, lambda: net(d1, c1, s1, renderer=renderer, num_stages=2))
    where = (f"{torch.cuda.get_device_name(device)}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
             f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}" if on_gpu
             else f"cpu, {torch.get_num_threads()} threads")
    print(f"DSF pose network, width {args.width}, torch {torch.__version__}, {where}")
    print(f"renderer: {render_label}")
    print(f"network FLOPs per frame: stage 1 {flop1 / 1e9:.2f} GFLOP, both stages {flop2 / 1e9:.2f} GFLOP "
          f"(conv / transposed conv / linear; multiply-adds x 2)")

    rows = []
    for b in args.batches:
        for name, (module, chl, ctx) in _variants(net, args.all_variants or b == 1, device).items():
            depth, center, cube = inputs(b, chl)
            t1, _, c1 = measure(module, depth, center, cube, renderer, 1, ctx, reps[b], ref)
            t2, tr, c2 = measure(module, depth, center, cube, renderer, 2, ctx, reps[b], ref)
            rows.append((b, name, t1, c1, t2, tr, c2))
    rate, cpu_rate = ref.rate, ref.cpu_rate
    cpu_note = "" if on_gpu else f", {cpu_rate / 1e9:.1f} GFLOP per CPU-second"
    print(f"reference: torch.mm {ref.n}x{ref.n} float32 on {device.type} = {rate / 1e9:.1f} GFLOP/s wall"
          f"{cpu_note} (best of {ref.samples} samples)")
    print()
    cpu_head = (f" {'cpu%mm':>6}", f" {'cpu%mm':>6}") if not on_gpu else ("", "")
    head = (f"{'batch':>5}  {'variant':<22} {'stage1 fps':>10} {'%mm':>5}{cpu_head[0]} | {'2-stage fps':>11} "
            f"{'s/batch':>8} {'%mm':>5} {'net%mm':>6}{cpu_head[1]} {'render':>7}")
    print(head)
    print("-" * len(head))
    measured = not isinstance(renderer.inner, NullRenderer)
    for b, name, t1, c1, t2, tr, c2 in rows:
        render = f"{100 * tr / t2:6.1f}%" if measured else "    n/m"
        cpu1 = f" {100 * b * flop1 / c1 / cpu_rate:>5.0f}%" if not on_gpu else ""
        cpu2 = f" {100 * b * flop2 / c2 / cpu_rate:>5.0f}%" if not on_gpu else ""
        print(f"{b:>5}  {name:<22} {b / t1:>10.2f} {100 * b * flop1 / t1 / rate:>4.0f}%{cpu1} | {b / t2:>11.2f} "
              f"{t2:>8.3f} {100 * b * flop2 / t2 / rate:>4.0f}% {100 * b * flop2 / max(t2 - tr, 1e-9) / rate:>5.0f}%"
              f"{cpu2} {render}")
    print()
    print("%mm: network FLOP/s over matmul FLOP/s, wall clock (2-stage: rendering included; net%mm: rendering time"
          " excluded);" + ("" if on_gpu else "\ncpu%mm: the same per process CPU-second.")
          + " render: share of the 2-stage time spent in render_prediction.")
    if on_gpu:
        best32 = [b / t2 for b, _, _, _, t2, _, _ in rows if b == 32]
        verdict = (f"best 2-stage fps at batch 32: {max(best32):.0f} ({'meets' if max(best32) >= 1000 else 'MISSES'}"
                   " the target)" if best32 else "batch 32 not measured")
        print(f"target (cuda): 2-stage >= 1000 frames/s at batch 32; {verdict}. n/m = rendering not measured.")
    else:
        print("targets (cpu): 2-stage %mm >= 50 %, render < 10 %. n/m = rendering not measured.")


if __name__ == "__main__":
    main()
