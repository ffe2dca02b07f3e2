"""Speed of the ICP point-to-triangle distances (CPU, 2 threads) against brute force in the same run.

Run from the repository root: ``.venv/bin/python bench/mesh_distance.py [--batch 32] [--ref-batch 4]
[--p3d-repeats 3]``.

Workload of one d2m / part-aware ICP call (docs/method.md §9): B posed stand-in MANO hands (779 vertices,
1554 faces, norm-xyz units ≈ ±1); 2048 points per sample drawn on a slightly different pose of the same hand,
plus noise (Q_all: all faces; Q_fin: part faces only, each point labelled with a part of its source face).
Timed: forward, and forward+backward of the mean, for ``point_mesh_sqdist`` and ``point_part_sqdist``
(15 parts) with the default search (BVH on the CPU). Reference: the same calls with ``search="brute"``
(chunked all-pairs torch) on ``--ref-batch`` samples, scaled linearly to B (its cost is exactly per sample;
``--ref-batch 32`` measures the full size). Times are the best of ``--repeats`` runs (the least disturbed on
a shared machine); speed-up = reference / ours (fwd+bwd).

Second reference, when pytorch3d is importable here or installed in the separate venv ``.venv-p3d``:
pytorch3d's ``point_face_distance`` (``min_triangle_area=0``) on the full batch, timed in that python by
bench/p3d_distance_ref.py (same thread setting, but its CPU kernel is serial; best of ``--p3d-repeats``; one
whole-mesh forward takes seconds), with the largest differences of its squared distances from ours.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from render import mesh_distance as md
from render.mano_layer import ManoLayer
from render.standin import load_standin
from bench.timing import best_seconds
from util.joints import NUM_PARTS

NORM_HALF_CUBE_MM = 125.0  # norm-xyz = (x - centre) / (cube / 2), cube 250 mm
P3D_PYTHON = REPO / ".venv-p3d" / "bin" / "python"
P3D_SCRIPT = REPO / "bench" / "p3d_distance_ref.py"


def hand_batch(layer: ManoLayer, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed closed hands (B, 779, 3) in norm units, and the same hands with a slightly different pose."""
    rot = 0.5 * torch.randn(batch, 3, generator=gen)
    pose = 0.3 * torch.randn(batch, 45, generator=gen)
    rest = torch.cat([torch.zeros(batch, 10), torch.ones(batch, 1), torch.zeros(batch, 3)], 1)  # betas s t
    out = []
    for p in (pose, pose + 0.05 * torch.randn(batch, 45, generator=gen)):
        # forward_dsf takes PCA coefficients: these give the finger axis-angles p (components are invertible)
        pca = torch.linalg.solve(layer.hands_components.T, (p - layer.hands_mean).T).T
        o = layer.forward_dsf(torch.cat([rot, pca, rest], 1))  # mm, wrist closed (779 vertices)
        out.append((o.vertices - o.joints[:, 9:10]) / NORM_HALF_CUBE_MM)  # centred near the palm
    return out[0], out[1]


def sample_points(verts: torch.Tensor, faces: torch.Tensor, parts: torch.Tensor | None, n: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted surface samples + 0.01 noise (≈ 1.3 mm): (B, n, 3), and labels (B, n).

    With ``parts`` (part bits (F,), Q_fin of the part-aware loss) only faces of some part are sampled and each
    point gets a random part holding its source face (1..K); without (Q_all), all faces and labels 0.
    """
    tri = verts[:, faces]  # (B, F, 3, 3)
    area = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]).norm(dim=-1)
    member = torch.ones(faces.shape[0], 1)
    if parts is not None:
        member = ((parts[:, None] >> torch.arange(1, NUM_PARTS + 1)) & 1).float()  # (F, K)
        area = area * (member.sum(1) > 0)
    fi = torch.multinomial(area, n, replacement=True, generator=gen)  # (B, n)
    w = torch.rand(*fi.shape, 2, generator=gen)
    w = torch.where(w.sum(-1, keepdim=True) > 1, 1 - w, w)  # uniform on the triangle
    t = tri[torch.arange(len(fi))[:, None], fi]  # (B, n, 3, 3)
    a, ab, ac = t[..., 0, :], t[..., 1, :] - t[..., 0, :], t[..., 2, :] - t[..., 0, :]
    pts = a + w[..., :1] * ab + w[..., 1:] * ac + 0.01 * torch.randn(a.shape, generator=gen)
    labels = torch.multinomial(member[fi.reshape(-1)], 1, generator=gen).view(fi.shape)
    return pts, labels + (parts is not None)


def best_ms(fn, repeats: int) -> float:
    """Fastest call in ms after a warm-up (numba cache load or JIT compile, allocator)."""
    return 1e3 * best_seconds(fn, repeats)


def timed(fn, pts: torch.Tensor, verts: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of ``fn(points, verts).mean()``."""
    def fwd():
        with torch.no_grad():
            fn(pts, verts)

    def fwd_bwd():
        fn(pts, verts.detach().requires_grad_()).mean().backward()

    return best_ms(fwd, repeats), best_ms(fwd_bwd, repeats)


def pytorch3d_python() -> str | None:
    """A python that can import pytorch3d: this one, else the separate venv's, else None."""
    if importlib.util.find_spec("pytorch3d") is not None:
        return sys.executable
    return str(P3D_PYTHON) if P3D_PYTHON.exists() else None


def run_pytorch3d(python: str, verts: torch.Tensor, faces: torch.Tensor, q_all: torch.Tensor,
                  q_fin: torch.Tensor, ids: list[torch.Tensor], labels: torch.Tensor,
                  repeats: int) -> dict[str, np.ndarray]:
    """bench/p3d_distance_ref.py on the batch: whole mesh on ``q_all``, per part (face ids) on ``q_fin``."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, points=q_all.numpy(), verts=verts.numpy(), faces=faces.numpy(),
                 weights=np.ones(q_all.shape[:2], np.float32), part_ids=torch.cat(ids).numpy(),
                 part_sizes=np.array([len(x) for x in ids]), labels=labels.numpy(), part_points=q_fin.numpy())
        subprocess.run([python, str(P3D_SCRIPT), str(src), str(dst), "--repeat", str(repeats), "--threads",
                        str(torch.get_num_threads())], cwd=REPO, check=True)
        return dict(np.load(dst))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--ref-batch", type=int, default=4, help="samples the brute-force reference runs on")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--p3d-repeats", type=int, default=3, help="timed pytorch3d runs (0: skip pytorch3d)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    layer = ManoLayer(load_standin())
    faces, parts = layer.faces_closed, layer.part_bits
    verts, observed = hand_batch(layer, args.batch, gen)
    q_all, _ = sample_points(observed, faces, None, args.points, gen)
    q_fin, labels = sample_points(observed, faces, parts, args.points, gen)
    nb = min(args.ref_batch, args.batch)
    print(f"B={args.batch} P={args.points} F={faces.shape[0]} parts={NUM_PARTS}, float32, "
          f"{torch.get_num_threads()} threads; brute-force reference on {nb} samples x {args.batch / nb:g}")

    def whole(search: str):
        return lambda p, v: md.point_mesh_sqdist(p, v, faces, search=search)

    def per_part(search: str):  # labels cut to the batch of the points
        return lambda p, v: md.point_part_sqdist(p, v, faces, parts, labels[:len(p)], search=search)

    print(f"{'call':<15}{'ours fwd':>10}{'fwd+bwd':>10}{'brute fwd+bwd':>15}{'speed-up':>10}")
    ours = {}
    for name, pts, make in (("mesh", q_all, whole), ("part", q_fin, per_part)):
        fwd, both = timed(make("auto"), pts, verts, args.repeats)
        _, ref = timed(make("brute"), pts[:nb], verts[:nb], max(1, args.repeats // 4))
        ref *= args.batch / nb
        # sanity: both searches give the same distances on the reference samples
        torch.testing.assert_close(make("auto")(pts[:nb], verts[:nb]), make("brute")(pts[:nb], verts[:nb]),
                                   rtol=1e-4, atol=1e-6)
        label = "whole mesh" if name == "mesh" else f"per part ({NUM_PARTS})"
        print(f"{label:<15}{fwd:>8.1f}ms{both:>8.1f}ms{ref:>13.1f}ms{ref / both:>9.1f}x")
        with torch.no_grad():
            ours[name] = (fwd, both, make("auto")(pts, verts).numpy())

    python = pytorch3d_python() if args.p3d_repeats > 0 else None
    if python is None:
        print("pytorch3d: skipped (" + ("--p3d-repeats 0" if args.p3d_repeats <= 0 else
                                         "not importable here and no .venv-p3d") + ")")
        return
    p3d = run_pytorch3d(python, verts, faces, q_all, q_fin, layer.part_face_ids, labels, args.p3d_repeats)
    print(f"pytorch3d point_face_distance (min_triangle_area=0; {python}), full batch, best of "
          f"{args.p3d_repeats}; ratio = pytorch3d / ours")
    # relative differences only where d > 1e-4 (1.25 mm): closer in, float32 cancellation dominates both
    print(f"{'call':<15}{'p3d fwd':>10}{'fwd+bwd':>10}{'fwd ratio':>11}{'fwd+bwd ratio':>15}{'max|Δd|':>10}"
          f"{'max rel (d>1e-4)':>18}")
    for name, (fwd, both, d) in ours.items():
        p_fwd, p_both = 1e3 * float(p3d[f"{name}_t_fwd_s"]), 1e3 * float(p3d[f"{name}_t_fwdbwd_s"])
        ref = p3d[f"{name}_sqdist"]
        off = ref > 1e-4
        diff, rel = np.abs(d - ref).max(), (np.abs(d - ref)[off] / ref[off]).max()
        label = "whole mesh" if name == "mesh" else f"per part ({NUM_PARTS})"
        print(f"{label:<15}{p_fwd:>8.0f}ms{p_both:>8.0f}ms{p_fwd / fwd:>10.1f}x{p_both / both:>14.1f}x"
              f"{diff:>10.1e}{rel:>18.1e}")


if __name__ == "__main__":
    main()
