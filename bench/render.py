"""Benchmark of the depth rasterizer: stand-in MANO hands rendered into their 128x128 crops on the CPU.

Hands as in DSF's synthetic generator (docs/method.md §8.2): random pose/shape, centred, random rotation,
placed 500-1200 mm on the optical axis, crop centre jitter ±20 mm, cube 250 mm × U(0.8, 1.2), NYU camera.

Prints, per batch size, forward and forward+backward ms of ``render_crop`` (the default CPU path with the
numba selection kernel, and the pure-torch selection that CUDA uses), and two references measured in the same
run:

- a naive dense rasterizer (every face against every pixel, torch) at batch 1;
- pytorch3d's CPU ``MeshRasterizer`` (``../shared/tools/p3d_reference.py render`` run by
  ``.venv-p3d/bin/python``) on the same meshes, with the speed ratios, the max depth difference and the number
  of pixels whose visible face differs. pytorch3d takes one shared camera, so for that comparison every hand
  is mapped by the exact shear x' = (fx_b x + (cx_b - cx) z) / fx (likewise y), which makes the shared crop
  camera see what the hand's own crop camera sees (same pixels, same depths).

Then the method's second geometric kernel, the point-to-triangle distance (``bench/mesh_distance.py``: B = 32,
2048 points, 1554 faces, whole mesh and per part, beside brute force and pytorch3d's ``point_face_distance``).

Run: ``.venv/bin/python bench/render.py [--batches 1 8 32 128] [--no-p3d] [--no-distance]``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from render.rasterizer import render_crop, render_depth  # noqa: E402
from util.camera import NYU_CAMERA  # noqa: E402
from util.geometry import crop_intrinsics, crop_matrix_batch  # noqa: E402
from bench.timing import median_seconds  # noqa: E402

P3D_PYTHON = REPO / ".venv-p3d" / "bin" / "python"
P3D_SCRIPT = REPO.parent / "shared" / "tools" / "p3d_reference.py"
SIZE = 128


def stand_in_layer():
    """The MANO layer of the procedural stand-in (built once per run)."""
    from render.mano_layer import ManoLayer
    from render.standin import load_standin

    return ManoLayer(load_standin())


def stand_in_hands(layer, batch: int, seed: int = 0):
    """Stand-in MANO hands of ``layer``: verts (B, 779, 3) mm camera frame, faces (1554, 3), centres (B, 3),
    cubes (B, 3).
    """
    from render.mano_params import NUM_BETAS, NUM_POSE_PCA, ManoParams

    g = torch.Generator().manual_seed(seed)
    params = ManoParams(global_orient=torch.zeros(batch, 3),
                        pose_pca=torch.randn(batch, NUM_POSE_PCA, generator=g),
                        betas=torch.randn(batch, NUM_BETAS, generator=g), scale=torch.ones(batch, 1),
                        transl=torch.zeros(batch, 3))
    with torch.no_grad():
        out = layer.forward_dsf(params.to_vector())
    verts = out.vertices - out.joints.mean(1, keepdim=True)
    q, r = torch.linalg.qr(torch.randn(batch, 3, 3, generator=g))
    rot = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None]  # uniformly random orthogonal
    rot = rot * torch.det(rot)[:, None, None]  # proper rotation
    depth = 500 + 700 * torch.rand(batch, generator=g)
    on_axis = torch.stack([torch.zeros(batch), torch.zeros(batch), depth], 1)
    verts = verts @ rot.transpose(1, 2) + on_axis[:, None]
    centre = on_axis + 40 * torch.rand(batch, 3, generator=g) - 20
    cube = 250.0 * (0.8 + 0.4 * torch.rand(batch, 1, generator=g)).expand(batch, 3)
    return verts.contiguous(), layer.faces_closed, centre, cube.contiguous()


def dense_reference(verts: torch.Tensor, faces: torch.Tensor, cam: torch.Tensor, size: int) -> torch.Tensor:
    """Naive hard z-buffer, every face against every pixel (torch, chunks of faces). Depth (B, H, W)."""
    B = verts.shape[0]
    i, j = torch.meshgrid(torch.arange(size, dtype=verts.dtype), torch.arange(size, dtype=verts.dtype),
                          indexing="ij")
    best = torch.full((B, size * size), float("inf"), dtype=verts.dtype)
    for b in range(B):
        fx, fy, cx, cy = cam[b]
        tri = verts[b][faces]  # (F, 3, 3)
        u, v, z = cx + fx * tri[..., 0] / tri[..., 2], cy + fy * tri[..., 1] / tri[..., 2], tri[..., 2]
        for s in range(0, faces.shape[0], 128):
            uu, vv, zz = (t[s:s + 128, :, None] for t in (u, v, z))  # (f, 3, 1)
            du, dv = uu - j.reshape(1, 1, -1), vv - i.reshape(1, 1, -1)  # (f, 3, P)
            w = du.roll(-1, 1) * dv.roll(-2, 1) - du.roll(-2, 1) * dv.roll(-1, 1)
            area = w.sum(1)
            inside = ((w > 0).all(1) | (w < 0).all(1)) & (area != 0)
            depth = area / (w / zz).sum(1)
            best[b] = torch.minimum(best[b], torch.where(inside, depth, torch.inf).amin(0))
    return torch.where(torch.isinf(best), 0, best).reshape(B, size, size)


def timed(fn, repeat: int, warmup: bool = True) -> float:
    """Median wall time in ms (after one warm-up call)."""
    return 1e3 * median_seconds(fn, repeat, warmup)


def shared_camera_verts(verts: torch.Tensor, cams: torch.Tensor, shared: tuple) -> torch.Tensor:
    """Exact shear mapping each sample's crop camera onto one shared camera (same pixels, same depths)."""
    fx, fy, cx, cy = shared
    x, y, z = verts.unbind(-1)
    c = cams[:, None]
    xs = (c[..., 0] * x + (c[..., 2] - cx) * z) / fx
    ys = (c[..., 1] * y + (c[..., 3] - cy) * z) / fy
    return torch.stack([xs, ys, z], -1)


def run_pytorch3d(verts: torch.Tensor, faces: torch.Tensor, shared: tuple, weights: torch.Tensor,
                  repeat: int) -> dict:
    """pytorch3d reference render (depth, pix_to_face, grad_verts, timings) through the separate venv."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/in.npz", verts=verts.numpy(), faces=faces.numpy(),
                 intrinsics=np.array(shared, np.float32), image_size=np.array([SIZE, SIZE]),
                 weights=weights.numpy())
        proc = subprocess.run([str(P3D_PYTHON), str(P3D_SCRIPT), "render", f"{tmp}/in.npz", f"{tmp}/out.npz",
                               "--repeat", str(repeat), "--threads", "2"], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-1500:])
        return dict(np.load(f"{tmp}/out.npz"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--no-p3d", action="store_true", help="skip the pytorch3d reference")
    ap.add_argument("--no-distance", action="store_true", help="skip the point-to-triangle distance benchmark")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    cam = NYU_CAMERA.as_tuple()
    use_p3d = not a.no_p3d and P3D_PYTHON.exists() and P3D_SCRIPT.exists()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {SIZE}x{SIZE} crops, stand-in MANO "
          f"hands 500-1200 mm, NYU camera; times are medians in ms")

    layer = stand_in_layer()
    verts, faces, centre, cube = stand_in_hands(layer, 1, seed=1)
    render_crop(verts, faces, centre, cube, cam)  # compiles / loads the numba kernel
    M = crop_matrix_batch(centre.double().numpy(), cube.double().numpy(), cam, SIZE)
    k_crop = torch.as_tensor(crop_intrinsics(cam, M), dtype=torch.float32)
    dense = []
    t_dense = timed(lambda: dense.append(dense_reference(verts, faces, k_crop, SIZE)), 1, warmup=False)
    t_one = timed(lambda: render_crop(verts, faces, centre, cube, cam), 50)
    dense_diff = dense[0] - render_crop(verts, faces, centre, cube, cam)[0].depth
    print(f"reference: naive dense all-faces x all-pixels torch forward, B=1: {t_dense:.1f} ms "
          f"(this renderer {t_one:.2f} ms -> {t_dense / t_one:.0f}x faster; max |depth diff| "
          f"{dense_diff.abs().max():.2e} mm)")
    if not use_p3d:
        why = "--no-p3d" if a.no_p3d else "no .venv-p3d or p3d_reference.py, see docs/pytorch3d.md"
        print(f"pytorch3d reference skipped ({why})")

    head = (f"{'B':>4} {'fwd':>8} {'fwd+bwd':>8} {'torch-sel fwd':>14} {'torch-sel f+b':>14} {'covered':>8}")
    if use_p3d:
        head += (f" | {'p3d fwd':>9} {'p3d f+b':>9} {'ratio fwd':>9} {'ratio f+b':>9} {'max|dz| mm':>10} "
                 f"{'face diff':>9}")
    print(head)
    for B in a.batches:
        verts, faces, centre, cube = stand_in_hands(layer, B, seed=B)
        weights = torch.rand(B, SIZE, SIZE)
        repeat = max(5, 64 // B)

        def fwd(**kw):
            return render_crop(verts, faces, centre, cube, cam, **kw)[0]

        def fwd_bwd(**kw):
            x = verts.clone().requires_grad_(True)
            (render_crop(x, faces, centre, cube, cam, **kw)[0].depth * weights).sum().backward()

        t_f, t_fb = timed(fwd, repeat), timed(fwd_bwd, repeat)
        t_tf = timed(lambda: fwd(use_numba=False), repeat)
        t_tfb = timed(lambda: fwd_bwd(use_numba=False), repeat)
        cov = fwd().mask.float().mean().item()
        line = f"{B:4d} {t_f:8.2f} {t_fb:8.2f} {t_tf:14.2f} {t_tfb:14.2f} {cov:8.1%}"
        if use_p3d:
            M = crop_matrix_batch(centre.double().numpy(), cube.double().numpy(), cam, SIZE)
            cams = torch.as_tensor(crop_intrinsics(cam, M), dtype=torch.float64)
            shared = (301.0, 301.0, 63.5, 63.5)
            sv = shared_camera_verts(verts.double(), cams, shared).float()
            ref = run_pytorch3d(sv, faces, shared, weights, repeat=1 if B >= 32 else 3)
            mine = render_depth(sv, faces, shared, (SIZE, SIZE))
            x = sv.clone().requires_grad_(True)
            m_f = timed(lambda: render_depth(sv, faces, shared, (SIZE, SIZE)), repeat)
            m_fb = timed(lambda: (render_depth(x, faces, shared, (SIZE, SIZE)).depth * weights).sum()
                         .backward(), repeat)
            same = (mine.face_index.numpy() == ref["pix_to_face"]) & mine.mask.numpy()
            dz = np.abs(mine.depth.numpy() - ref["depth"])[same].max()
            p_f, p_fb = 1e3 * ref["t_forward_s"], 1e3 * (ref["t_forward_s"] + ref["t_backward_s"])
            line += (f" | {p_f:9.1f} {p_fb:9.1f} {p_f / m_f:9.0f} {p_fb / m_fb:9.0f} {dz:10.1e} "
                     f"{int((mine.face_index.numpy() != ref['pix_to_face']).sum()):9d}")
        print(line, flush=True)
    if not a.no_distance:
        print("\npoint-to-triangle distance kernel (bench/mesh_distance.py):", flush=True)
        from bench.mesh_distance import main as distance_main

        distance_main([] if not a.no_p3d else ["--p3d-repeats", "0"])


if __name__ == "__main__":
    main()
