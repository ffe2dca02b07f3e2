"""One pre-training and one fine-tuning iteration of the trainer, timed and split into its parts.

The iterations are exactly the trainer's (``train_render.pretrain_step`` / ``finetune_step``, the weighted total,
backward, AdamW step), on the stand-in assets (procedural MANO model, NYU-format stand-in tree generated into
``--assets``), at batch ``--batch`` synthetic (+ the same number of real crops when fine-tuning), for every width of
``--widths`` (1.0 = the paper's network; 0.125 = the demo; 0.25 = the claim benchmark's CPU width).

Split (seconds of one iteration, best of ``--repeats`` after a warm-up; process CPU time on the CPU, wall time on
CUDA; ``--threads N`` sets torch's threads):

- ``data``: the synthetic batch (pose sampling, MANO, rasterising, occlusion masks) and the real batch (loader);
- ``forward+loss`` / ``backward`` / ``optimiser``: the step itself;
- inside forward+loss, measured by timing wrappers around the library calls (forward passes only; their backward
  is inside ``backward``): ``mano`` (``ManoLayer.forward_dsf``), ``rendering`` (rasterising predictions into crops,
  incl. the stage-2 remap render), ``distance`` (point-to-mesh and point-to-part distance kernels);
- ``network``: the pose network alone, forward + backward of the synthetic input with a dummy loss, measured
  separately (its remap render counted again there);
- ``other``: forward+loss minus mano, rendering, distance and the network forward share (losses, decoding,
  segmentation, sampling).

Run: ``nice -n 10 .venv/bin/python bench/train_step.py [--batch 32] [--widths 1.0,0.25] [--repeats 2]
[--device cpu|cuda] [--json out.json]``. Results: docs/BENCHMARKS.md, "Trainer iteration".
``--procs 1,2``: instead, seconds per global iteration with 1 and 2 gloo processes (torchrun + DDP, the global batch
split over the processes); results: docs/BENCHMARKS.md, "Distributed training".
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import train_render as T  # noqa: E402
from config import load_config  # noqa: E402

_ACC: dict[str, float] = defaultdict(float)
#: clock of the split: process CPU time on the CPU (robust to other jobs on a shared machine; with one thread it is
#: the work done), wall time on CUDA (``--clock`` overrides)
CLOCK = time.process_time


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def timed_calls(device: torch.device):
    """Accumulate the wall time of the MANO, rendering and distance-kernel calls into ``_ACC``."""
    import model.losses as L
    import render.hand_renderer as HR
    from render.mano_layer import ManoLayer

    def wrap(owner, name, key):
        fn = getattr(owner, name)

        def timed(*a, **k):
            _sync(device)
            t = CLOCK()
            try:
                return fn(*a, **k)
            finally:
                _sync(device)
                _ACC[key] += CLOCK() - t
        setattr(owner, name, timed)
        return owner, name, fn

    saved = [wrap(ManoLayer, "forward_dsf", "mano"), wrap(HR, "render_normalised_crop", "rendering"),
             wrap(L, "point_mesh_sqdist", "distance"), wrap(L, "point_part_sqdist", "distance")]
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def one_iteration(stage: str, cfg, models, opt, syn_src, real_iter, gen, device) -> dict[str, float]:
    """Seconds of the parts of one iteration."""
    weights = T.loss_weights(cfg)
    _ACC.clear()
    t0 = CLOCK()
    with timed_calls(device):
        syn = syn_src.next_batch()
    data_mano_render = dict(_ACC)
    real = T._to(next(real_iter), device) if stage == "finetune" else None
    _sync(device)
    t1 = CLOCK()
    _ACC.clear()
    with timed_calls(device):
        res = T.finetune_step(models, syn, real, cfg, gen) if real is not None else T.pretrain_step(models, syn, cfg)
        total = T.weighted_total(res.terms, weights)
        _sync(device)
    t2 = CLOCK()
    parts = dict(_ACC)
    opt.zero_grad(set_to_none=True)
    total.backward()
    _sync(device)
    t3 = CLOCK()
    opt.step()
    _sync(device)
    t4 = CLOCK()
    out = {"data": t1 - t0, "forward+loss": t2 - t1, "backward": t3 - t2, "optimiser": t4 - t3, "total": t4 - t0,
           "mano": parts.get("mano", 0.0), "rendering": parts.get("rendering", 0.0),
           "distance": parts.get("distance", 0.0), "data_synthetic_render": sum(data_mano_render.values())}
    out["m2p_selected"] = res.stats.get("m2p_selected", 0.0)
    return out


def network_seconds(models, syn, device, repeats: int) -> tuple[float, float]:
    """(forward, backward) seconds of the network alone on a synthetic batch (dummy loss: mean of outputs)."""
    best_f, best_b = float("inf"), float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t = CLOCK()
        out = models.forward(syn["depth"], syn)
        loss = sum(s.maps.mean() + s.mano.mean() for s in out.stages)
        _sync(device)
        t2 = CLOCK()
        loss.backward()
        _sync(device)
        t3 = CLOCK()
        best_f, best_b = min(best_f, t2 - t), min(best_b, t3 - t2)
    return best_f, best_b


def bench(width: float, batch: int, repeats: int, device: torch.device, assets: str) -> dict:
    from dataloader.builders import build_real_loader, build_synthetic

    cfg = load_config([f"demo_dir={assets}", "demo_train_frames=64", "demo_test_frames=8"])
    mano, tree = T.ensure_demo_assets(cfg)
    cfg = dataclasses.replace(cfg, mano_path=mano, data_root=tree, width=width, batch_size=batch, transfer="none",
                              num_workers=0, device=str(device))
    res = {}
    for stage in ("pretrain", "finetune"):
        torch.manual_seed(0)
        models = T.build_models(cfg, device, transfer=True)
        models.net.train()
        opt, _ = T.build_optimizer(cfg, models.net)
        syn_src = build_synthetic(cfg, device, stage, mano_layer=models.layer)
        loader = build_real_loader(cfg, "train", train=True)

        def real_batches():
            while True:
                yield from loader
        real_iter = real_batches()
        gen = torch.Generator().manual_seed(1)
        runs = [one_iteration(stage, cfg, models, opt, syn_src, real_iter, gen, device) for _ in range(repeats + 1)]
        best = min(runs[1:], key=lambda r: r["total"])  # first = warm-up (JIT, allocator)
        fwd, bwd = network_seconds(models, syn_src.next_batch(), device, repeats)
        best["network_forward"], best["network_backward"] = fwd, bwd
        best["other"] = max(best["forward+loss"] - best["mano"] - best["rendering"] - best["distance"]
                            - (fwd - 0.0), 0.0)
        best["render_distance_share"] = (best["rendering"] + best["distance"]) / best["total"]
        res[stage] = best
    return res


# ------------------------------------------------------------------------------------------------------
# 1 vs several gloo processes (issue 15): the same global batch, DDP over torchrun
# ------------------------------------------------------------------------------------------------------
def ddp_worker(args) -> int:
    """Under torchrun: time ``args.iters`` iterations of stage ``args.ddp_worker`` (per-rank batch ``args.batch``,
    DDP when several processes); rank 0 writes {"seconds": per iteration} to ``args.json``."""
    from dataloader.builders import build_real_loader, build_synthetic
    from util.distributed import barrier, cleanup_distributed, init_distributed, wrap_ddp

    info = init_distributed("cpu")
    torch.set_num_threads(args.threads)
    stage, width = args.ddp_worker, float(args.widths.split(",")[0])
    cfg = load_config([f"demo_dir={args.assets}", "demo_train_frames=64", "demo_test_frames=8"])
    if info.is_main:
        T.ensure_demo_assets(cfg)  # generated on first use, by one process
    barrier(info)
    mano, tree = T.ensure_demo_assets(cfg)
    cfg = dataclasses.replace(cfg, mano_path=mano, data_root=tree, width=width, batch_size=args.batch,
                              transfer="none", num_workers=0, device="cpu")
    torch.manual_seed(0)
    models = T.build_models(cfg, info.device, transfer=True)
    models.net = wrap_ddp(models.net, info)
    opt, _ = T.build_optimizer(cfg, models.net)
    syn_src = build_synthetic(cfg, info.device, stage, mano_layer=models.layer, dist=info)
    loader = build_real_loader(cfg, "train", train=True, dist=info)

    def real_batches():
        while True:
            yield from loader
    real_iter, gen = real_batches(), torch.Generator().manual_seed(1)
    times = []
    for i in range(args.iters + 1):  # the first is a warm-up
        barrier(info)
        t = time.perf_counter()
        one_iteration(stage, cfg, models, opt, syn_src, real_iter, gen, info.device)
        barrier(info)
        times.append(time.perf_counter() - t)
    if info.is_main:
        Path(args.json).write_text(json.dumps({"seconds": min(times[1:]), "all": times,
                                               "threads": torch.get_num_threads()}))
    cleanup_distributed()
    return 0


def compare_processes(args) -> int:
    """Seconds per global iteration (global batch ``args.batch`` synthetic + ``args.batch`` real) with each process
    count of ``args.procs``, for pre-training and fine-tuning, width ``args.widths`` (first value)."""
    import os
    import subprocess
    import tempfile

    width = float(args.widths.split(",")[0])
    print(f"gloo processes on CPU: global batch {args.batch} (+{args.batch} real in fine-tuning) split over the "
          f"processes, width {width:g}; seconds per iteration, best of {args.iters} after a warm-up")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    results = {}
    for procs in (int(p) for p in args.procs.split(",")):
        if args.batch % procs:
            raise SystemExit(f"--batch {args.batch} is not divisible by {procs} processes")
        for stage in ("pretrain", "finetune"):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "r.json"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                       f"--nproc_per_node={procs}", str(Path(__file__).resolve()), "--ddp-worker", stage,
                       "--batch", str(args.batch // procs), "--widths", str(width), "--iters", str(args.iters),
                       "--assets", args.assets, "--json", str(out),
                       "--threads", str(args.threads or max(1, (os.cpu_count() or 1) // procs))]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{procs} processes, {stage}: failed\n{proc.stderr[-3000:]}")
                r = json.loads(out.read_text())
            results[f"{procs} proc {stage}"] = r
            print(f"{procs} process(es) x {r['threads']} thread(s) {stage:>8}: {r['seconds']:.3f} s/iteration, "
                  f"{2 * args.batch / r['seconds'] if stage == 'finetune' else args.batch / r['seconds']:.1f} "
                  "samples/s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--widths", default="1.0,0.25")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--assets", default=str(REPO / "data" / "bench_assets"))
    ap.add_argument("--json", default="")
    ap.add_argument("--procs", default="", help="e.g. 1,2: seconds per global iteration with that many gloo "
                    "processes (torchrun, DDP; the global batch split over them) instead of the split above")
    ap.add_argument("--iters", type=int, default=2, help="--procs: timed iterations per stage (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="--procs: torch threads per process (0 = cores / procs)")
    ap.add_argument("--ddp-worker", default="", help=argparse.SUPPRESS)  # internal: the torchrun child, a stage
    ap.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                    help="split: auto = process CPU time on the CPU, wall time on CUDA")
    args = ap.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    if args.procs:
        return compare_processes(args)
    device = torch.device(args.device)
    global CLOCK
    wall = args.clock == "wall" or (args.clock == "auto" and device.type == "cuda")
    CLOCK = time.perf_counter if wall else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, clock {'wall' if wall else 'process CPU'}, torch threads {torch.get_num_threads()}, batch {args.batch} (+{args.batch} real in "
          "fine-tuning); seconds per iteration, best of", args.repeats)
    all_res = {}
    keys = ("total", "data", "forward+loss", "backward", "optimiser", "network_forward", "network_backward", "mano",
            "rendering", "distance", "other")
    for w in (float(x) for x in args.widths.split(",")):
        r = bench(w, args.batch, args.repeats, device, args.assets)
        all_res[f"width {w:g}"] = r
        for stage, v in r.items():
            print(f"width {w:g} {stage:>8}: " + "  ".join(f"{k} {v[k]:.3f}" for k in keys)
                  + f"  | rendering+distance {100 * v['render_distance_share']:.1f} % of the iteration"
                  + f"  | {1.0 / v['total']:.2f} it/s")
    if args.json:
        Path(args.json).write_text(json.dumps(all_res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
