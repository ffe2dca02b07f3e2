"""pytorch3d reference for render/mesh_distance.py: squared point-to-triangle distances, gradients, timings.

Needs pytorch3d, so it runs in the separate venv (requirements-pytorch3d.txt), called by
tests/render/test_mesh_distance.py and bench/mesh_distance.py as a subprocess from the repository root:

    .venv-p3d/bin/python bench/p3d_distance_ref.py IN.npz OUT.npz [--repeat N] [--threads 2] [--repo]

The reference uses nothing from this repo: pytorch3d's ``point_face_distance`` (pytorch3d.loss.
point_mesh_distance) on packed points and triangles, with ``min_triangle_area=0`` (exact distance for every
triangle; pytorch3d >= 0.6.2 otherwise treats triangles below 5e-3 area as degenerate, i.e. as their edges).

Input .npz
  points (B, P, 3), verts (B, V, 3) float32; faces (F, 3) int64 shared by the batch
  weights (B, P) float32: gradients of sum(weights * d) are returned
  optional parts: part_ids (sum F_k,) int64 face ids of parts 1..K concatenated, part_sizes (K,) int64,
    labels (B, P) int64 in 0..K (0 = no part); part_points (B, P, 3) float32 for the part queries (default:
    points) with part_weights (B, P) (default: weights)
Output .npz (``mesh_`` = nearest face of the whole mesh; ``part_`` = of the point's own part, 0 for label 0)
  {mesh,part}_sqdist (B, P); {mesh,part}_grad_points (B, P, 3); {mesh,part}_grad_verts (B, V, 3)
  mesh_sqdist_default_area (B, P): the same with pytorch3d's default min_triangle_area
  with --repeat N > 0: {mesh,part}_t_fwd_s, {mesh,part}_t_fwdbwd_s: best of N runs of the forward (no grad)
    and of forward + backward of the mean
  with --repo: repo_{mesh,part}_sqdist, repo_{mesh,part}_grad_verts from render.mesh_distance with
    backend="pytorch3d" (the repo's own wrapper, imported from the working directory)
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np
import torch
from pytorch3d.loss import point_mesh_distance as p3d

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stdlib-only timing helper beside this script
from timing import best_seconds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def sqdist(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, mask: torch.Tensor,
           min_triangle_area: float | None = 0.0) -> torch.Tensor:
    """pytorch3d's squared distance (B, P) from the points in ``mask`` (B, P) to the triangles ``faces``
    (F_k, 3) of their mesh; 0 elsewhere. Clouds without masked points are left out of the packed batch.
    ``min_triangle_area=None``: pytorch3d's default."""
    counts = mask.sum(1)
    keep = counts > 0
    tris = verts[keep][:, faces]  # (B', F_k, 3, 3)
    counts = counts[keep]
    points_first = torch.cumsum(counts, 0) - counts
    tris_first = torch.arange(len(tris)) * tris.shape[1]
    args = (points[mask], points_first, tris.reshape(-1, 3, 3), tris_first, int(counts.max()))
    # an autograd Function's apply: positional arguments only
    d = p3d.point_face_distance(*args, *([] if min_triangle_area is None else [min_triangle_area]))
    return torch.zeros(mask.shape, dtype=d.dtype).masked_scatter(mask, d)


def part_sqdist(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, parts: list[torch.Tensor],
                labels: torch.Tensor) -> torch.Tensor:
    """(B, P) squared distance to the nearest face of part labels[b, p] (one pytorch3d call per part)."""
    out = torch.zeros(labels.shape)
    for k, ids in enumerate(parts, start=1):
        if bool((labels == k).any()):
            out = out + sqdist(points, verts, faces[ids], labels == k)
    return out


def evaluate(name: str, fn, points: torch.Tensor, verts: torch.Tensor, weights: torch.Tensor, repeats: int,
             out: dict[str, np.ndarray]) -> None:
    """Values, weighted-sum gradients and (repeats > 0) timings of ``fn(points, verts)`` into ``out``."""
    p, v = points.clone().requires_grad_(), verts.clone().requires_grad_()
    d = fn(p, v)
    gp, gv = torch.autograd.grad((weights * d).sum(), (p, v))
    out.update({f"{name}_sqdist": d.detach().numpy(), f"{name}_grad_points": gp.numpy(),
                f"{name}_grad_verts": gv.numpy()})
    if repeats <= 0:
        return

    def fwd() -> None:
        with torch.no_grad():
            fn(points, verts)

    def fwd_bwd() -> None:
        fn(points, verts.detach().requires_grad_()).mean().backward()

    out[f"{name}_t_fwd_s"], out[f"{name}_t_fwdbwd_s"] = np.array(best_seconds(fwd, repeats)), \
        np.array(best_seconds(fwd_bwd, repeats))


def load(path: Path) -> dict:
    """The input arrays as tensors; exits with a message naming the file if one is missing."""
    data = np.load(path)
    try:
        inp = {key: torch.from_numpy(data[key]).float() for key in ("points", "verts", "weights")}
        inp["faces"] = torch.from_numpy(data["faces"]).long()
        if "part_ids" in data:
            inp["parts"] = list(torch.from_numpy(data["part_ids"]).long().split(data["part_sizes"].tolist()))
            inp["labels"] = torch.from_numpy(data["labels"]).long()
            for key in ("points", "weights"):
                inp[f"part_{key}"] = torch.from_numpy(data[f"part_{key}"]).float() if f"part_{key}" in data \
                    else inp[key]
    except KeyError as err:
        sys.exit(f"{path}: expected arrays points, verts, faces, weights [part_ids, part_sizes, labels] "
                 f"({err} missing)")
    return inp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inp", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeat", type=int, default=0, help="timed runs (0: no timing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repo", action="store_true", help="also render.mesh_distance backend='pytorch3d'")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "min_triangle_area" not in inspect.signature(p3d._PointFaceDistance.forward).parameters:
        sys.exit("this pytorch3d (< 0.6.2) has no min_triangle_area: its distance is already the exact one")
    inp = load(args.inp)
    faces, everywhere = inp["faces"], torch.ones(inp["points"].shape[:2], dtype=torch.bool)
    calls = {"mesh": (lambda p, v: sqdist(p, v, faces, everywhere), inp["points"], inp["weights"])}
    if "parts" in inp:
        calls["part"] = (lambda p, v: part_sqdist(p, v, faces, inp["parts"], inp["labels"]),
                         inp["part_points"], inp["part_weights"])
    out: dict[str, np.ndarray] = {}
    for name, (fn, points, weights) in calls.items():
        evaluate(name, fn, points, inp["verts"], weights, args.repeat, out)
    with torch.no_grad():
        out["mesh_sqdist_default_area"] = sqdist(inp["points"], inp["verts"], faces, everywhere, None).numpy()
    if args.repo:
        sys.path.insert(0, str(REPO))
        from render import mesh_distance as md

        repo_calls = {"mesh": lambda p, v: md.point_mesh_sqdist(p, v, faces, backend="pytorch3d"),
                      "part": lambda p, v: md.point_part_sqdist(p, v, faces, inp["parts"], inp["labels"],
                                                                backend="pytorch3d")}
        for name, (_, points, weights) in calls.items():
            res: dict[str, np.ndarray] = {}
            evaluate(name, repo_calls[name], points, inp["verts"], weights, 0, res)
            out.update({f"repo_{k}": res[k] for k in (f"{name}_sqdist", f"{name}_grad_verts")})
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
