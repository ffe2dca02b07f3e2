"""Optional pytorch3d backend of the depth rasterizer (``renderer='pytorch3d'``), same interface as
:func:`render.rasterizer.render_depth`.

Imported only when chosen (:func:`render.rasterizer.get_rasterizer`). pytorch3d needs its own venv (a CUDA
build of torch 2.11/2.12 even on CPU); see docs/pytorch3d.md.

Camera mapping (verified by ``../shared/tools/p3d_reference.py selftest``): R = diag(-1, -1, 1), T = 0 turns
the repo's camera frame (+x right, +y down) into pytorch3d's view frame (+x left, +y up);
``PerspectiveCameras`` in screen space (``in_ndc=False``) with principal point (cx + 0.5, cy + 0.5), because
pytorch3d puts the centre of pixel j at j + 0.5 while the repo (OpenCV) puts it at j. Settings:
``blur_radius=0, faces_per_pixel=1``, no culling, ``perspective_correct=True`` (the repo's choice; DSF's
pytorch3d 0.4.0 used False). Faces with a vertex at z <= ``z_near`` are dropped before rasterising, as in the
torch backend.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from render.rasterizer import Z_NEAR, CameraLike, Rendered, camera_tensor

INSTALL_HINT = (
    "renderer='pytorch3d' needs pytorch3d, which is not importable here ({err}). Install it into a separate "
    "venv (it needs a CUDA build of torch 2.12 even on CPU, ~5 GB): python3 -m venv .venv-p3d && "
    ".venv-p3d/bin/pip install torch==2.12.1 easypytorch3d==0.7.9.post1 numpy ; GPU/conda route: "
    "docs/pytorch3d.md. Or use renderer='torch' (built in, same results)."
)

try:
    from pytorch3d.renderer import MeshRasterizer, PerspectiveCameras, RasterizationSettings
    from pytorch3d.structures import Meshes
except (ImportError, OSError) as _err:  # OSError: a binary built against another torch
    raise ImportError(INSTALL_HINT.format(err=f"{type(_err).__name__}: {_err}")) from _err


def render_depth_pytorch3d(verts: Tensor, faces: Tensor, camera: CameraLike,
                           image_size: Sequence[int] = (128, 128), *, z_near: float = Z_NEAR,
                           bin_size: int | None = None, perspective_correct: bool = True) -> Rendered:
    """pytorch3d ``MeshRasterizer`` depth, interface and semantics of :func:`render.rasterizer.render_depth`.

    Args:
        verts: (B, V, 3) float mm, camera frame (+x right, +y down, +z forward).
        faces: (F, 3) int, shared by the batch.
        camera: (fx, fy, cx, cy) or (B, 4), OpenCV convention (pixel j centred at u = j).
        image_size: (H, W).
        z_near: faces with a vertex at z <= z_near (mm) are dropped.
        bin_size: pytorch3d's ``bin_size`` (None: its heuristic; 0 = naive, the CPU path).
        perspective_correct: pytorch3d's flag (True = the torch backend's interpolation).
    Returns:
        :class:`Rendered` depth (B, H, W) (0 = background, differentiable), mask, face_index (-1 = empty).
    """
    B, H, W = verts.shape[0], int(image_size[0]), int(image_size[1])
    faces = faces.to(device=verts.device, dtype=torch.int64)
    cam = camera_tensor(camera, B, verts)
    with torch.no_grad():
        zf = verts.detach()[:, :, 2][:, faces]  # (B, F, 3)
        keep = ((zf > z_near) & torch.isfinite(zf)).all(-1)  # (B, F)
    kept = [torch.nonzero(k).squeeze(1) for k in keep]
    meshes = Meshes(verts=list(verts.unbind(0)), faces=[faces[k] for k in kept])
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=verts.dtype, device=verts.device))
    cameras = PerspectiveCameras(
        focal_length=cam[:, :2], principal_point=cam[:, 2:] + 0.5, in_ndc=False, image_size=[(H, W)] * B,
        R=flip.expand(B, 3, 3), T=verts.new_zeros(B, 3), device=verts.device)
    settings = RasterizationSettings(image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, bin_size=bin_size,
                                     perspective_correct=perspective_correct, cull_backfaces=False)
    frags = MeshRasterizer(cameras=cameras, raster_settings=settings)(meshes)
    packed = frags.pix_to_face[..., 0]  # (B, H, W) index into the packed kept faces, -1 = empty
    covered = packed >= 0
    original = torch.cat(kept) if kept else packed.new_zeros(0)  # packed kept face -> original face index
    face_index = torch.where(covered, original[packed.clamp(min=0)] if original.numel() else packed, packed)
    depth = torch.where(covered, frags.zbuf[..., 0], torch.zeros_like(frags.zbuf[..., 0]))
    return Rendered(depth, covered, face_index)
