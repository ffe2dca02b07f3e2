"""Data-pipeline benchmark on the CPU: NYU loader (stand-in tree), synthetic batches, stand-in generation.

Reference measured in the same run: the raw decode rate of the tree's depth PNGs (``decode_depth``, frames/s).
Printed, as samples (frames) per second and as ratios to that reference:

- stand-in generation (``generate_standin_nyu``; 3 rendered views, then views 2/3 as hard links), frames/s;
- ``NYUDataset`` (train split, augmentation on) through a DataLoader with 0 and 2 workers, batch 32;
- ``NYUDataset`` test split (no augmentation), 0 workers;
- the synthetic renderer (``render_synthetic_batch``, built-in pose source, occlusion on), batch 32;
- a training-step reference: one pre-training-like step of the two-stage network (forward with the remap
  rendering, pixel + joint Huber losses of both stages, backward, AdamW) at batch 32, and the time the loaders
  need for one batch as a fraction of it (the loader must never be the bottleneck).

Run: ``.venv/bin/python bench/data.py [--train 128] [--test 32] [--batches 4]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dataloader.depth_io import decode_depth  # noqa: E402
from dataloader.nyu import NYUDataset  # noqa: E402
from dataloader.standin_nyu import generate_standin_nyu, load_model  # noqa: E402
from dataloader.synthetic import SyntheticSettings, builtin_pose_params, render_synthetic_batch  # noqa: E402
from render.mano_layer import ManoLayer  # noqa: E402
from render.standin import write_standin  # noqa: E402
from util.camera import NYU_CAMERA  # noqa: E402
from bench.timing import best_seconds  # noqa: E402


def rate(fn, items: int, repeat: int = 1) -> float:
    """Items per second of ``fn`` (best of ``repeat`` runs, no warm-up: the machine is shared)."""
    return items / best_seconds(fn, repeat, warmup=False)


def loader_rate(ds: NYUDataset, workers: int, batches: int, batch_size: int = 32) -> float:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)  # start-up (worker spawn) not counted
    n = min(batches, len(ds) // batch_size - 1)

    def run():
        for _ in range(n):
            next(it)

    return rate(run, n * batch_size)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=128, help="stand-in training frames")
    ap.add_argument("--test", type=int, default=32, help="stand-in test frames")
    ap.add_argument("--batches", type=int, default=3, help="timed batches of 32 per loader configuration")
    ap.add_argument("--step-width", type=float, default=0.25,
                    help="network width of the training-step reference")
    args = ap.parse_args(argv)
    if args.train < 96:
        ap.error("--train must be >= 96: the loader timing needs batches of 32 beyond the warm-up batch")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "nyu"
        mano = Path(tmp) / "MANO_RIGHT.pkl"
        write_standin(str(mano))  # written once: the generator and the synthetic renderer both read it
        model = load_model(str(mano))
        generate_standin_nyu(Path(tmp) / "warm", 2, 1, mano_path=str(mano))  # numba compile etc.
        frames = args.train + args.test
        gen = rate(lambda: generate_standin_nyu(root, args.train, args.test, mano_path=str(mano)), frames)
        gen_copy = rate(lambda: generate_standin_nyu(Path(tmp) / "copy", args.train, args.test,
                                                     mano_path=str(mano), view_mode="copy"), frames)
        pngs = sorted((root / "train").glob("depth_1_*.png"))
        ref = rate(lambda: [decode_depth(p) for p in pngs], len(pngs), repeat=5)

        train = NYUDataset(root, "train")
        test = NYUDataset(root, "test")
        r0 = loader_rate(train, 0, args.batches)
        r2 = loader_rate(train, 2, args.batches)
        rt = rate(lambda: [test[i] for i in range(len(test))], len(test), repeat=2)

        layer = ManoLayer(model)
        params = torch.from_numpy(builtin_pose_params(model.hands_coeffs, 32, seed=0))
        g = torch.Generator().manual_seed(0)
        settings = SyntheticSettings(cube=250.0)
        render_synthetic_batch(params, layer, NYU_CAMERA.as_tuple(), settings, g)  # warm-up
        rs = rate(lambda: [render_synthetic_batch(params, layer, NYU_CAMERA.as_tuple(), settings, g)
                           for _ in range(args.batches)], 32 * args.batches)

        synth = render_synthetic_batch(params, layer, NYU_CAMERA.as_tuple(), settings, g)
        step = train_step_seconds(args.step_width, layer, synth)

    print(f"reference: raw depth-PNG decode {ref:8.1f} frames/s (1.00)")
    rows = [("stand-in generation, 3 rendered views", gen, "frames/s"),
            ("stand-in generation, views 2/3 linked", gen_copy, "frames/s"),
            ("NYU loader train+aug, 0 workers", r0, "samples/s"),
            ("NYU loader train+aug, 2 workers", r2, "samples/s"),
            ("NYU loader test, 0 workers", rt, "samples/s"),
            ("synthetic batch 32 (render+occlusion)", rs, "samples/s")]
    for name, value, unit in rows:
        print(f"{name:40s} {value:8.1f} {unit:9s} ratio to PNG decode {value / ref:6.3f}")
    print(f"training step (width {args.step_width:g}, batch 32, two stages): {step * 1e3:8.1f} ms")
    for name, value in (("NYU loader train+aug, 2 workers", r2), ("synthetic batch 32", rs)):
        print(f"  {name:38s} one batch = {32 / value / step:6.3f} of a training step")


def train_step_seconds(width: float, layer: ManoLayer, batch: dict, repeat: int = 2) -> float:
    """Seconds of one pre-training-like optimisation step of the pose network on a synthetic batch."""
    step = make_train_step(width, layer, batch)
    step()  # warm-up
    return 1.0 / rate(step, 1, repeat)


def make_train_step(width: float, layer: ManoLayer, batch: dict):
    """A callable running one pre-training-like step (two-stage network of ``width``, forward with the remap
    render, pixel + joint Huber losses of both stages, backward, AdamW) on ``batch`` (``depth``,
    ``mano_joints_uvd_norm``, ``center_xyz``, ``cube``)."""
    from model import build_pose_net, decode_offsets, encode_offsets, huber
    from render.hand_renderer import HandRenderer

    net = build_pose_net(2, 21, width=width)
    renderer = HandRenderer(layer, NYU_CAMERA.as_tuple())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    # targets and decoding use the occlusion-masked render ``depth`` (docs/method.md §6, §9), G's input
    depth, joints = batch["depth"], batch["mano_joints_uvd_norm"]
    target = encode_offsets(joints, depth)

    def step():
        out = net(depth, batch["center_xyz"], batch["cube"], renderer=renderer)
        loss = sum(huber(s.maps, target) + 100.0 * huber(decode_offsets(s.maps, depth), joints)
                   for s in out.stages)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


if __name__ == "__main__":
    main()
