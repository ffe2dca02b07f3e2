"""Benchmark: NYU evaluation of all shared community result files at once (the CLI path, plots included).

Prints wall times (best of ``REPEATS``) and ratios against references measured in the same run:
- parsing: ``load_predictions`` vs the community evaluator's per-line ``float`` parse and a whole-file
  ``np.loadtxt``;
- evaluation: ``util.evaluate.main`` (in-process, with and without ``--out`` plotting) and the full
  ``python -m util.evaluate`` subprocess vs a re-implementation of the community script's pipeline
  (per-line parse, lift, errors, success via one ``np.where`` per threshold; no plotting).

Run: ``.venv/bin/python bench/evaluate.py``
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from util.evaluate import load_predictions, main  # noqa: E402
from bench.timing import best_seconds  # noqa: E402

REPEATS = 3
NYU = REPO.parent / "shared" / "nyu"
GT = NYU / "test_groundtruth_uvd.txt"


def best_of(fn, repeats: int = REPEATS) -> float:
    return best_seconds(fn, repeats, warmup=False)


def community_parse(path: Path) -> np.ndarray:
    with open(path) as fh:
        rows = [list(map(float, line.strip().split())) for line in fh]
    return np.array(rows).reshape(len(rows), -1, 3)


def community_eval(files: list[Path]) -> list[float]:
    """The awesome-hand-pose-estimation pipeline (get_errors + draw_map's loop), without plotting."""
    def lift(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[..., 0] = (a[..., 0] - 320) * a[..., 2] / 588.03
        a[..., 1] = (a[..., 1] - 240) * a[..., 2] / -587.07
        return a

    means = []
    for f in files:
        gt = lift(community_parse(GT))  # the script re-reads the labels for every method
        err = np.sqrt(((lift(community_parse(f)) - gt) ** 2).sum(axis=2))
        worst = err.max(axis=1)
        _ = [np.where(worst <= th)[0].shape[0] / worst.shape[0] for th in range(85)]
        means.append(float(err.mean()))
    return means


def run_main(args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)
    if rc != 0:
        raise RuntimeError(f"util.evaluate.main returned {rc}")


def main_bench() -> None:
    torch.set_num_threads(2)
    files = sorted((NYU / "published_results").glob("*.txt"))
    if not files or not GT.is_file():
        raise SystemExit(f"reference files not found under {NYU}")
    all_files = [GT, *files]
    n_mb = sum(f.stat().st_size for f in all_files) / 2**20
    print(f"{len(files)} result files + ground truth ({n_mb:.1f} MiB, {len(all_files) * 8252} lines)")

    t_ours = best_of(lambda: [load_predictions(f) for f in all_files])
    t_lines = best_of(lambda: [community_parse(f) for f in all_files])
    t_loadtxt = best_of(lambda: [np.loadtxt(f) for f in all_files])
    print("\nparsing all files")
    print(f"  load_predictions        {t_ours * 1e3:8.1f} ms   1.00")
    print(f"  per-line float (ref)    {t_lines * 1e3:8.1f} ms   {t_lines / t_ours:5.2f} x ours")
    print(f"  np.loadtxt whole file   {t_loadtxt * 1e3:8.1f} ms   {t_loadtxt / t_ours:5.2f} x ours")

    names = [str(f) for f in files]
    t_ref = best_of(lambda: community_eval(files))
    t_table = best_of(lambda: run_main([*names, "--gt", str(GT)]))
    with tempfile.TemporaryDirectory() as tmp:
        t_cli = best_of(lambda: run_main([*names, "--gt", str(GT), "--out", tmp]))
        cmd = [sys.executable, "-m", "util.evaluate", *names, "--gt", str(GT), "--out", tmp]
        t_proc = best_of(lambda: subprocess.run(cmd, cwd=REPO, check=True, capture_output=True), repeats=2)
    print("\nevaluating all methods (ratio = time / community pipeline without plots)")
    print(f"  community pipeline (ref, no plots)     {t_ref * 1e3:8.1f} ms   1.00")
    print(f"  main(), table only                     {t_table * 1e3:8.1f} ms   {t_table / t_ref:5.2f}")
    print(f"  main() --out (CSV, JSON, 2 PNG plots)  {t_cli * 1e3:8.1f} ms   {t_cli / t_ref:5.2f}")
    print(f"  python -m util.evaluate --out (proc.)  {t_proc * 1e3:8.1f} ms   {t_proc / t_ref:5.2f}")


if __name__ == "__main__":
    main_bench()
