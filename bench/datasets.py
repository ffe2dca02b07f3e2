"""ICVL / MSRA benchmark: loader throughput per data set (stand-in trees) and ``phase=annotate`` frames/s.

Reference measured in the same run, per data set: the raw decode rate of its depth files (ICVL 16-bit PNG,
MSRA ``.bin``), frames/s. Printed:

- stand-in generation (``generate_standin_icvl`` / ``generate_standin_msra``), frames/s;
- the loader (train split with augmentation, test split without) through a DataLoader with 0 workers, batch 32,
  samples/s and as a ratio to the raw decode;
- ``phase=annotate`` (util/annotate.py) on the ICVL stand-in test split at the demo width, an untrained
  two-stage network, batch 32: frames/s end to end (model build, chunks, files, contact sheet) and for the
  prediction alone (second run on the same chunks removed), on ``--device`` (cpu, or cuda when available).

Run: ``.venv/bin/python bench/datasets.py [--frames 128] [--width 0.25] [--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bench.timing import best_seconds  # noqa: E402
from dataloader.icvl import ICVLDataset, read_icvl_depth  # noqa: E402
from dataloader.msra import MSRADataset, read_msra_bin  # noqa: E402
from dataloader.standin_icvl import generate_standin_icvl  # noqa: E402
from dataloader.standin_msra import generate_standin_msra  # noqa: E402
from render.standin import write_standin  # noqa: E402

MSRA_GESTURES_BENCH = ("1", "2", "3", "4")


def rate(fn, items: int, repeat: int = 1) -> float:
    """Items per second of ``fn`` (best of ``repeat`` runs, no warm-up: the machine is shared)."""
    return items / best_seconds(fn, repeat, warmup=False)


def loader_rate(ds, batches: int, batch_size: int = 32) -> float:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    it = iter(loader)
    next(it)  # warm-up batch not counted
    n = min(batches, len(ds) // batch_size - 1)
    if n < 1:
        raise SystemExit(f"{type(ds).__name__}: {len(ds)} samples; need >= {2 * batch_size} for a timed batch")

    def run():
        for _ in range(n):
            next(it)

    return rate(run, n * batch_size)


def annotate_rates(root: Path, mano: Path, tmp: Path, width: float, device: str
                   ) -> tuple[float, float, float, int]:
    """(end-to-end frames/s, prediction-only frames/s, prediction-only frames per CPU second of this process,
    frames) of phase=annotate on the ICVL test split (CPU seconds: less sensitive to other load)."""
    from config import load_config
    from train_render import build_models
    from util.annotate import CHUNK_DIR, annotate

    args = ["dataset=icvl", f"data_root={root}", f"mano_path={mano}", f"width={width}", "batch_size=32",
            "num_workers=0", f"device={device}", "transfer=none", "phase=annotate", "annotate_chunk=32",
            "annotate_sheet=8"]
    cfg = load_config(args)
    torch.manual_seed(0)
    net = build_models(cfg, torch.device(device), transfer=False).net
    ckpt = tmp / "untrained.pth"
    torch.save({"model": net.state_dict(), "epoch": 0}, ckpt)
    cfg = load_config(args + [f"load_model={ckpt}"])
    run = tmp / "annotate_run"
    warm = load_config(args + [f"load_model={ckpt}", "annotate_sheet=0"])
    annotate(warm, str(tmp / "annotate_warm"))  # rasteriser / kernels compiled once
    t0 = time.perf_counter()
    res = annotate(cfg, str(run))
    total = time.perf_counter() - t0
    shutil.rmtree(run / "annotations" / CHUNK_DIR)
    t0, c0 = time.perf_counter(), time.process_time()
    annotate(load_config(args + [f"load_model={ckpt}", "annotate_sheet=0"]), str(run))
    predict, cpu = time.perf_counter() - t0, time.process_time() - c0
    return res["frames"] / total, res["frames"] / predict, res["frames"] / cpu, res["frames"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=128, help="ICVL stand-in frames per split")
    ap.add_argument("--msra-frames", type=int, default=4, help="MSRA frames per subject and gesture (4 gestures)")
    ap.add_argument("--batches", type=int, default=2, help="timed loader batches of 32")
    ap.add_argument("--width", type=float, default=0.25, help="network width of the annotate run (demo: 0.25)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        mano = tmp / "MANO_RIGHT.pkl"
        write_standin(str(mano))
        generate_standin_icvl(tmp / "warm", 2, 2, mano_path=str(mano))  # numba compile etc.
        icvl = tmp / "icvl"
        g_icvl = rate(lambda: generate_standin_icvl(icvl, args.frames, args.frames, mano_path=str(mano)),
                      2 * args.frames + 2)
        msra = tmp / "msra"
        n_msra = 9 * len(MSRA_GESTURES_BENCH) * args.msra_frames
        g_msra = rate(lambda: generate_standin_msra(msra, args.msra_frames, MSRA_GESTURES_BENCH,
                                                    mano_path=str(mano)), n_msra)
        pngs = sorted((icvl / "Depth").rglob("*.png"))
        bins = sorted(msra.rglob("*_depth.bin"))
        ref_icvl = rate(lambda: [read_icvl_depth(p) for p in pngs], len(pngs), repeat=3)
        ref_msra = rate(lambda: [read_msra_bin(p) for p in bins], len(bins), repeat=3)
        rows = []
        for name, ref, train, test in (
                ("ICVL", ref_icvl, ICVLDataset(icvl, "train"), ICVLDataset(icvl, "test")),
                ("MSRA", ref_msra, MSRADataset(msra, "train", 0, gestures=MSRA_GESTURES_BENCH),
                 MSRADataset(msra, "test", 0, gestures=MSRA_GESTURES_BENCH))):
            rows.append((f"{name} loader train+aug, 0 workers", loader_rate(train, args.batches), ref))
            rows.append((f"{name} loader test, 0 workers",
                         rate(lambda: [test[i] for i in range(len(test))], len(test), repeat=2), ref))
        ann_total, ann_pred, ann_cpu, n_ann = annotate_rates(icvl, mano, tmp, args.width, args.device)

    print(f"reference: raw decode ICVL PNG {ref_icvl:8.1f} frames/s, MSRA .bin {ref_msra:8.1f} frames/s")
    print(f"stand-in generation ICVL {g_icvl:8.1f} frames/s, MSRA {g_msra:8.1f} frames/s")
    for name, value, ref in rows:
        print(f"{name:34s} {value:8.1f} samples/s  ratio to raw decode {value / ref:6.3f}")
    print(f"phase=annotate, ICVL test ({n_ann} frames), width {args.width:g}, two stages, batch 32, "
          f"{args.device}: {ann_total:7.1f} frames/s end to end, {ann_pred:7.1f} frames/s prediction + chunk files "
          f"({ann_cpu:6.2f} frames per process CPU second)")


if __name__ == "__main__":
    main()
