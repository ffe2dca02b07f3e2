"""Consis-CycleGAN benchmark on the stand-in (issue 14): does translation bring synthetic crops closer to real ones
while keeping the hand's depth values?

The stand-in's real split is rendered through a Kinect-like sensor model (noise, disparity quantisation, holes,
edge dropouts) with a forearm; the synthetic crops are clean renders. Two translators are trained with the same
seed and data, consistency weight 0 (plain CycleGAN) and the default, then evaluated with
:func:`model.transfer_eval.evaluate_translators` against the held-out real test split: the consistency metric
(docs/method.md §12; lower = hand depths kept) and the domain distance (mean normalised 1-D Wasserstein distance of
sensor statistics; the identity map = raw synthetic crops is the reference, the real train split the floor).

CPU budget: a reduced translator (``--ngf 8 --blocks 3 --ndf 16``) for a few hundred iterations; DSF's
full-size G_A (ngf 64, 9 blocks) is the default of ``train_stage=transfer``. ``--time-full`` also times one
full-size iteration (batch 1).

Run: ``nice .venv/bin/python bench/transfer.py train --weight 10`` and ``... train --weight 0`` (in parallel or
one after the other), then ``... evaluate`` (table + ``--png``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from config import load_config  # noqa: E402


def ensure_assets(root: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    """Stand-in MANO file and a one-view stand-in NYU tree under ``root`` (generated on first use)."""
    from dataloader.standin_nyu import ensure_standin_nyu
    from render.standin import write_standin

    root.mkdir(parents=True, exist_ok=True)
    mano = root / "MANO_RIGHT.pkl"
    if not mano.is_file():
        write_standin(str(mano))
    tree = ensure_standin_nyu(root / "nyu", n_train, n_test, seed=0, mano_path=str(mano), views=1,
                              view_mode="copy")
    return mano, tree


def bench_config(args, mano: Path, tree: Path, weight: float, **extra):
    return load_config(data_root=str(tree), mano_path=str(mano), num_workers=0, seed=args.seed,
                       transfer_ngf=args.ngf, transfer_n_blocks=args.blocks, transfer_ndf=args.ndf,
                       transfer_batch_size=args.batch, transfer_lr=args.lr, transfer_epochs=args.epochs,
                       transfer_decay_epochs=args.decay, iters_per_epoch=args.iters, transfer_consistency=weight,
                       log_every=10, img_log_every=100, **extra)


def run_dir(args, weight: float) -> Path:
    return Path(args.root) / args.runs / f"consis_{weight:g}"


def train(args) -> None:
    from model.transfer_train import train_transfer

    mano, tree = ensure_assets(Path(args.root), args.n_train, args.n_test)
    cfg = bench_config(args, mano, tree, args.weight, resume="auto" if args.resume else "")
    torch.manual_seed(args.seed)
    result = train_transfer(cfg, run_dir(args, args.weight))
    per_it = result["seconds"] / max(result["steps_this_run"], 1)
    print(f"weight {args.weight:g}: {result['steps_this_run']} iterations (of {result['steps']}) in "
          f"{result['seconds']:.0f} s "
          f"({per_it:.2f} s/iteration incl. data), last-epoch losses "
          + json.dumps({k: round(v, 4) for k, v in result["losses"].items()}))
    (run_dir(args, args.weight) / "bench_train.json").write_text(json.dumps({**result, "s_per_iter": per_it}))


def example_png(path: Path, synthetic: torch.Tensor, translated: dict[str, torch.Tensor], real: torch.Tensor,
                rows: int = 6) -> None:
    """Columns: raw synthetic | each translation | |last translation - synthetic| (black 0, white >= 1) | a real
    crop."""
    from model.transfer_train import save_grid_png

    names = list(translated)
    cols = [synthetic] + [translated[n] for n in names]
    diff = (translated[names[-1]] - synthetic).abs().clamp(0, 1) * 2 - 1  # shown as |diff|: 0 black, >= 1 white
    cols += [diff, real]
    grid = torch.cat([torch.cat([c[r, 0] for c in cols], 1) for r in range(rows)], 0)
    save_grid_png(path, ((grid.clamp(-1, 1) + 1) / 2).numpy())


def evaluate(args) -> None:
    from model.transfer_eval import collect_crops, evaluate_translators, format_report, load_generator

    mano, tree = ensure_assets(Path(args.root), args.n_train, args.n_test)
    cfg = bench_config(args, mano, tree, 0.0)
    synthetic, real_test, real_train = collect_crops(cfg, batches=args.eval_batches, batch_size=16)
    generators = {"identity (raw synthetic)": None}
    for w in args.weights:
        generators[f"CycleGAN, consistency weight {w:g}"] = load_generator(run_dir(args, w))
    report = evaluate_translators(generators, synthetic, real_test, real_train, half_cube_mm=cfg.cube / 2)
    print(f"{report['identity (raw synthetic)']['n']} synthetic crops vs {sum(r.shape[0] for r in real_test)} real "
          f"test crops (stand-in); translator ngf {args.ngf}, {args.blocks} blocks, ndf {args.ndf}")
    print(format_report(report))
    for w in args.weights:
        info = run_dir(args, w) / "bench_train.json"
        if info.is_file():
            t = json.loads(info.read_text())
            print(f"weight {w:g}: {t['steps']} iterations, {t['s_per_iter']:.2f} s/iteration")
    if args.png:
        with torch.no_grad():
            x = synthetic[0]
            translated = {name: g(x) for name, g in generators.items() if g is not None}
        example_png(Path(args.png), x, translated, real_test[0])
        print(f"examples: {args.png} (columns: synthetic, " + ", ".join(translated)
              + ", |last - synthetic| (black 0, white >= 1), a real crop)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def time_full(args) -> None:
    """One full-size (DSF G_A, ngf 64 / 9 blocks, ndf 64) iteration at batch 1 on random crops."""
    from bench.timing import median_seconds
    from model.cyclegan import CycleGANSettings
    from model.transfer_train import build_transfer_model, train_step

    for ngf, blocks, ndf in ((64, 9, 64), (args.ngf, args.blocks, args.ndf)):
        m = build_transfer_model(CycleGANSettings(ngf=ngf, n_blocks=blocks, ndf=ndf), lr=2e-4, beta1=0.5,
                                 n_epochs=1, n_epochs_decay=1, pool_size=50, device="cpu")
        a, b = torch.rand(1, 1, 128, 128) * 2 - 1, torch.rand(1, 1, 128, 128) * 2 - 1
        sec = median_seconds(lambda: train_step(m, a, b), 3)
        print(f"ngf {ngf}, {blocks} blocks, ndf {ndf}: {sec:.2f} s per iteration at batch 1 "
              f"({torch.get_num_threads()} thread(s))")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("train", "evaluate", "time-full"))
    ap.add_argument("--root", default=str(REPO / "data" / "bench_transfer"))
    ap.add_argument("--runs", default="runs", help="sub-folder of --root holding the two runs")
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-test", type=int, default=96)
    ap.add_argument("--weight", type=float, default=10.0, help="train: the consistency weight")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 10.0], help="evaluate: trained weights")
    ap.add_argument("--ngf", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--ndf", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--decay", type=int, default=2)
    ap.add_argument("--iters", type=int, default=50, help="iterations per epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="train: continue the run (e.g. with more --epochs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--png", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    t0 = time.time()
    {"train": train, "evaluate": evaluate, "time-full": time_full}[args.mode](args)
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
