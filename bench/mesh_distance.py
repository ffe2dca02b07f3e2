"""Speed of the ICP point-to-triangle distances (CPU, 2 threads) against brute force in the same run.

Run from the repository root: ``.venv/bin/python bench/mesh_distance.py [--batch 32] [--ref-batch 4]``.

Workload of one d2m / part-aware ICP call (dsf-method §6.4): B posed stand-in MANO hands (779 vertices,
1554 faces, norm-xyz units ≈ ±1); 2048 points per sample drawn on a slightly different pose of the same hand,
plus noise (Q_all: all faces; Q_fin: part faces only, each point labelled with a part of its source face).
Timed: forward, and forward+backward of the mean, for ``point_mesh_sqdist`` and ``point_part_sqdist``
(15 parts) with the default search (BVH on the CPU). Reference: the same calls with ``search="brute"``
(chunked all-pairs torch) on ``--ref-batch`` samples, scaled linearly to B (its cost is exactly per sample;
``--ref-batch 32`` measures the full size), and pytorch3d's ``point_face_distance`` when importable. Times are
the best of ``--repeats`` runs (the least disturbed on a shared machine); speed-up = reference / ours
(fwd+bwd).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from render import mesh_distance as md
from render.mano_io import load_mano
from render.mano_layer import ManoLayer
from render.standin import write_standin

NORM_HALF_CUBE_MM = 125.0  # norm-xyz = (x - centre) / (cube / 2), cube 250 mm


def hand_batch(layer: ManoLayer, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed closed hands (B, 779, 3) in norm units, and the same hands with a slightly different pose."""
    rot = 0.5 * torch.randn(batch, 3, generator=gen)
    pose = 0.3 * torch.randn(batch, 45, generator=gen)
    out = []
    for p in (pose, pose + 0.05 * torch.randn(batch, 45, generator=gen)):
        o = layer(rot, p, torch.zeros(batch, 10))
        wrist_centre = o.vertices[:, layer.wrist_loop].mean(1, keepdim=True)
        v = torch.cat([o.vertices, wrist_centre], 1)
        out.append((v - o.joints[:, 9:10]) / NORM_HALF_CUBE_MM)  # centred near the palm
    return out[0], out[1]


def sample_points(verts: torch.Tensor, faces: torch.Tensor, parts: list[torch.Tensor] | None, n: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted surface samples + 0.01 noise (≈ 1.3 mm): (B, n, 3), and labels (B, n).

    With ``parts`` (Q_fin of the part-aware loss) only faces of some part are sampled and each point gets a
    random part holding its source face (1..K); without (Q_all), all faces and labels 0.
    """
    tri = verts[:, faces]  # (B, F, 3, 3)
    area = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]).norm(dim=-1)
    member = torch.ones(faces.shape[0], 1)
    if parts is not None:
        member = torch.zeros(faces.shape[0], len(parts))
        for k, part in enumerate(parts):
            member[md._face_ids(part, faces, k + 1), k] = 1.0
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
    fn()  # warm-up: numba cache load or JIT compile, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def timed(fn, pts: torch.Tensor, verts: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of ``fn(points, verts).mean()``."""
    def fwd():
        with torch.no_grad():
            fn(pts, verts)

    def fwd_bwd():
        fn(pts, verts.detach().requires_grad_()).mean().backward()

    return best_ms(fwd, repeats), best_ms(fwd_bwd, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--ref-batch", type=int, default=4, help="samples the brute-force reference runs on")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_standin(str(Path(tmp) / "MANO_RIGHT.pkl"))
        layer = ManoLayer(load_mano(Path(tmp) / "MANO_RIGHT.pkl"))
    faces, parts = layer.faces_closed, layer.part_faces
    verts, observed = hand_batch(layer, args.batch, gen)
    q_all, _ = sample_points(observed, faces, None, args.points, gen)
    q_fin, labels = sample_points(observed, faces, parts, args.points, gen)
    nb = min(args.ref_batch, args.batch)
    print(f"B={args.batch} P={args.points} F={faces.shape[0]} parts={len(parts)}, float32, "
          f"{torch.get_num_threads()} threads; brute-force reference on {nb} samples x {args.batch / nb:g}")

    def whole(search: str, backend: str):
        return lambda p, v: md.point_mesh_sqdist(p, v, faces, search=search, backend=backend)

    def per_part(search: str, backend: str):  # labels cut to the batch of the points
        return lambda p, v: md.point_part_sqdist(p, v, faces, parts, labels[:len(p)], search=search,
                                                 backend=backend)

    have_p3d = importlib.util.find_spec("pytorch3d") is not None
    print(f"{'call':<15}{'ours fwd':>10}{'fwd+bwd':>10}{'brute fwd+bwd':>15}{'speed-up':>10}"
          + (f"{'pytorch3d':>12}{'speed-up':>10}" if have_p3d else ""))
    for name, pts, make in (("whole mesh", q_all, whole), ("per part (15)", q_fin, per_part)):
        fwd, both = timed(make("auto", "torch"), pts, verts, args.repeats)
        _, ref = timed(make("brute", "torch"), pts[:nb], verts[:nb], max(1, args.repeats // 4))
        ref *= args.batch / nb
        # sanity: both searches give the same distances on the reference samples
        torch.testing.assert_close(make("auto", "torch")(pts[:nb], verts[:nb]),
                                   make("brute", "torch")(pts[:nb], verts[:nb]), rtol=1e-4, atol=1e-6)
        row = f"{name:<15}{fwd:>8.1f}ms{both:>8.1f}ms{ref:>13.1f}ms{ref / both:>9.1f}x"
        if have_p3d:
            _, p3d = timed(make("auto", "pytorch3d"), pts, verts, args.repeats)
            row += f"{p3d:>10.1f}ms{p3d / both:>9.1f}x"
        print(row)


if __name__ == "__main__":
    main()
