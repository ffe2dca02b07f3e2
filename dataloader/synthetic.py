"""Synthetic pre-training data: MANO parameter sources and the batched synthetic renderer (dsf-method.md §5.1,
§5.4, §8.1-8.2).

Two halves, so that rendering runs batched in the training step and never mesh-by-mesh in workers:

- **parameters** (cheap, any DataLoader): :class:`SyntheticParams` holds (N, 62) DSF parameter vectors
  ``[axis-angle 3 | pose PCA 45 | betas 10 | scale 1 | transl 3]`` from the official HANDS19/20 fit files
  (:func:`load_hands_params`, located by :func:`find_hands_params`) or from the built-in pose source
  (:func:`builtin_pose_params`: the MANO file's own ``hands_coeffs``, 1554 captured poses in PCA space,
  interpolated, with noise and uniformly random global rotations; a documented substitute for the
  unreleased-source HANDS fits, §10 item 10).
  :class:`InfiniteShuffleSampler` reshuffles forever, so the fine-tuning loop can draw any number of batches.
- **rendering** (batched, on the training device): :func:`render_synthetic_batch` / :class:`SyntheticRenderer`
  turn (B, 62) parameters into crops and labels with exactly the keys and conventions of
  :class:`dataloader.nyu.NYUDataset` items (plus MANO-order joints, vertices and the un-occluded depth).

Which synthetic image is which (dsf-method.md §4.4, §5.4, §6.1): ``depth`` is the clean render **after** the
occlusion masking, i.e. the image the transfer network G receives and the one against which pixel targets are
encoded and predictions decoded; ``depth_unoccluded`` is the render before the masking (inspection and tests
only, never a training target).
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from dataloader.depth_io import DataFileError
from dataloader.nyu_joints import nyu36_from_mano21
from render.mano_layer import ManoLayer, batch_rodrigues
from render.mano_params import LAYOUT_AXIS_ANGLE, PARAM_DIM, ManoParams
from render.rasterizer import Rendered, render_normalised_crop
from util.geometry import pixel_points, uvd_to_norm_uvd, xyz_to_norm_xyz, xyz_to_uvd
from util.joints import NYU_EVAL_14

HANDS_FILE_PARTS = ("glb", "pose", "shape", "scale", "trans")  # concatenation order of the 62-d vector
VIEW_AUGS = ("none", "octant", "so3")
_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------
# parameter sources
# ----------------------------------------------------------------------------------------------------
def load_hands_params(directory, prefix: str = "hands") -> np.ndarray:
    """Read ``{prefix}-{glb,pose,shape,scale,trans}.txt`` (the official ``posePara_lm_collosion`` files).

    Returns (N, 62) float32 in the DSF layout. Each file must be whitespace text with N > 0 rows of 3, 45, 10,
    1, 3 numbers; a missing file raises FileNotFoundError, an empty or malformed one DataFileError (a
    ValueError), both naming the file.
    """
    d = Path(directory)
    widths = {"glb": 3, "pose": 45, "shape": 10, "scale": 1, "trans": 3}
    parts = []
    for name in HANDS_FILE_PARTS:
        path = d / f"{prefix}-{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"MANO parameter file not found: {path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's "input contained no data": reported below instead
            try:
                a = np.loadtxt(path, dtype=np.float64, ndmin=2)
            except ValueError as e:
                raise DataFileError(f"{path}: not a whitespace table of numbers ({e})") from e
        if a.size == 0:
            raise DataFileError(f"{path}: file is empty (expected N > 0 rows of {widths[name]} numbers)")
        if a.shape[1] != widths[name]:
            raise DataFileError(f"{path}: expected {widths[name]} columns, got {a.shape[1]}")
        if parts and a.shape[0] != parts[0].shape[0]:
            first = d / f"{prefix}-glb.txt"
            raise DataFileError(f"{path}: {a.shape[0]} rows, but {first} has {parts[0].shape[0]}")
        if not np.isfinite(a).all():
            raise DataFileError(f"{path}: contains NaN or inf")
        parts.append(a)
    return np.concatenate(parts, 1).astype(np.float32)


def find_hands_params(root, prefix: str = "hands") -> Path | None:
    """The directory of the official HANDS parameter files under ``root``, or None.

    Looks for ``{prefix}-*.txt`` in ``root/hands20/posePara_lm_collosion`` (the official layout, §8.1), then
    in ``root/posePara_lm_collosion``. A directory holding any of the five files is returned even when the set
    is incomplete, so that :func:`load_hands_params` names the missing file instead of silently falling back
    to the built-in source.
    """
    base = Path(root)
    for d in (base / "hands20" / "posePara_lm_collosion", base / "posePara_lm_collosion"):
        if any((d / f"{prefix}-{name}.txt").is_file() for name in HANDS_FILE_PARTS):
            return d
    return None


def random_rotations(n: int, generator: torch.Generator | None = None, mode: str = "so3") -> Tensor:
    """(n, 3) axis-angle rotations (float32, CPU).

    ``so3``: uniform on SO(3) (normalised Gaussian quaternion); ``octant``: each component U(0, 2 pi) (the
    official fine-tuning view augmentation, axis always in the positive octant, §10 item 18); ``none``: zeros.
    """
    if mode == "none":
        return torch.zeros(n, 3)
    if mode == "octant":
        return torch.rand(n, 3, generator=generator) * (2.0 * math.pi)
    if mode != "so3":
        raise ValueError(f"rotation mode must be one of {VIEW_AUGS}, got {mode!r}")
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)  # w >= 0: angle in [0, pi]
    angle = 2.0 * torch.atan2(q[:, 1:].norm(dim=1), q[:, 0])
    axis = q[:, 1:] / q[:, 1:].norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (axis * angle[:, None]).float()


def builtin_pose_params(hands_coeffs: np.ndarray | None, n: int, seed: int = 0, pose_noise: float = 0.2,
                        rotation: str = "so3") -> np.ndarray:
    """(n, 62) parameter vectors from the MANO file's captured poses (the built-in pose source).

    Each pose is ``(1 - t) c_i + t c_j + pose_noise * sigma * N(0, 1)`` for two random rows of
    ``hands_coeffs`` (K, 45), t ~ U(0, 1), sigma the per-component standard deviation of the rows; global
    rotation from :func:`random_rotations`; betas 0 (the renderer adds its shape noise), scale 1, translation
    0 (the renderer re-centres the hand). Without ``hands_coeffs`` (a file lacking them) poses are N(0, 1) per
    PCA component, with a warning.
    """
    rng = np.random.default_rng(seed)
    if hands_coeffs is None or len(hands_coeffs) < 2:
        warnings.warn("MANO file has no hands_coeffs: built-in poses are N(0, 1) in PCA space", stacklevel=2)
        pose = rng.standard_normal((n, 45))
    else:
        c = np.asarray(hands_coeffs, np.float64)
        i, j = rng.integers(len(c), size=n), rng.integers(len(c), size=n)
        t = rng.uniform(0.0, 1.0, (n, 1))
        sigma = c.std(0)
        pose = (1.0 - t) * c[i] + t * c[j] + pose_noise * sigma * rng.standard_normal((n, 45))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    out = np.zeros((n, PARAM_DIM), np.float32)
    out[:, LAYOUT_AXIS_ANGLE.global_orient] = random_rotations(n, gen, rotation).numpy()
    out[:, LAYOUT_AXIS_ANGLE.pose_pca] = pose
    out[:, LAYOUT_AXIS_ANGLE.scale] = 1.0
    return out


class SyntheticParams(Dataset):
    """Fixed set of 62-d parameter vectors; items ``{"params": (62,) float32, "cube": (3,) float32}``.

    Args:
        params: (N, 62) array (file or built-in source).
        cube: crop cube edge in mm given to every item (the renderer jitters it).
        source: where the vectors come from (kept as ``self.source`` for logs).
    """

    def __init__(self, params: np.ndarray, cube: float = 250.0, source: str = "array") -> None:
        p = np.asarray(params, np.float32)
        if p.ndim != 2 or p.shape[1] != PARAM_DIM or len(p) == 0:
            raise ValueError(f"params must be (N, {PARAM_DIM}) with N > 0, got {p.shape}")
        self.params = torch.from_numpy(p)
        self.cube = torch.full((3,), float(cube))
        self.source = source

    @classmethod
    def from_source(cls, hands_para_dir: str = "", hands_coeffs: np.ndarray | None = None,
                    n_builtin: int = 20000, seed: int = 0, pose_noise: float = 0.2,
                    cube: float = 250.0, search_roots: Sequence = ()) -> SyntheticParams:
        """The pose source of pre-training, chosen in this order:

        1. ``hands_para_dir`` when set (its files must be there);
        2. the first of ``search_roots`` (e.g. the data root's parent, then the data root) where
           :func:`find_hands_params` finds the official files;
        3. the built-in source (``n_builtin`` vectors from ``hands_coeffs``).

        The choice is logged (INFO) and kept in ``.source``: ``"hands files: <dir>"`` or ``"built-in: ..."``.
        """
        directory: Path | None = Path(hands_para_dir) if hands_para_dir else None
        for root in () if directory is not None else search_roots:
            directory = find_hands_params(root)
            if directory is not None:
                break
        if directory is not None:
            params = load_hands_params(directory)
            source = f"hands files: {directory} ({len(params)} vectors)"
        else:
            params = builtin_pose_params(hands_coeffs, n_builtin, seed, pose_noise)
            kind = "MANO hands_coeffs" if hands_coeffs is not None and len(hands_coeffs) >= 2 else "N(0, 1)"
            where = ", ".join(str(r) for r in search_roots) or "no search roots"
            source = f"built-in: {n_builtin} vectors from {kind} (no hands files under {where})"
        _log.info("synthetic pose source: %s", source)
        return cls(params, cube, source)

    def __len__(self) -> int:
        return self.params.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"params": self.params[i], "cube": self.cube}


class InfiniteShuffleSampler(Sampler[int]):
    """Indices 0..n-1 in a fresh random order every pass, forever (deterministic for a seed)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        if n <= 0:
            raise ValueError(f"need at least one item, got n={n}")
        self.n, self.seed = n, seed

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            yield from torch.randperm(self.n, generator=gen).tolist()


def param_loader(dataset: SyntheticParams, batch_size: int = 32, seed: int = 0,
                 num_workers: int = 0) -> DataLoader:
    """Endless DataLoader of ``{"params": (B, 62), "cube": (B, 3)}`` batches (use ``iter`` and ``next``)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=InfiniteShuffleSampler(len(dataset), seed),
                      num_workers=num_workers, drop_last=True)


# ----------------------------------------------------------------------------------------------------
# occlusion augmentation (§5.4)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Occlusion:
    """Occlusion spheres of one batch: joint ids (n,), centres (B, n, 3) norm-uvd, radii (B, n)."""

    joint_ids: Tensor
    centers: Tensor
    radii: Tensor


def occlusion_spheres(joints_uvd: Tensor, generator: torch.Generator | None = None,
                      num_joints: tuple[int, int] = (3, 9), offset: float = 0.15,
                      radius: float = 0.3) -> Occlusion:
    """Draw the official ``mask_img`` spheres: n ~ U{lo..hi} distinct joints (shared by the batch); per sample
    and joint a centre ``joint + U(-offset, offset)^3`` and a radius U(0, radius). joints_uvd (B, J, 3)
    norm-uvd."""
    B, J, _ = joints_uvd.shape
    lo, hi = num_joints
    n = min(int(torch.randint(lo, hi + 1, (1,), generator=generator)), J)
    ids = torch.randperm(J, generator=generator)[:n]
    jitter = (torch.rand(B, n, 3, generator=generator) * 2.0 - 1.0) * offset
    radii = torch.rand(B, n, generator=generator) * radius
    dev, dt = joints_uvd.device, joints_uvd.dtype
    return Occlusion(ids.to(dev), joints_uvd[:, ids.to(dev)] + jitter.to(dev, dt), radii.to(dev, dt))


def occlusion_mask(depth: Tensor, occ: Occlusion) -> Tensor:
    """(B, 1, H, W) bool: pixels whose (u_p, v_p, d_p) lies inside an occlusion sphere.

    Pixel centres and depths as :func:`util.geometry.pixel_points` (convention (a) of §2.5).
    """
    B, _, H, W = depth.shape
    pts = pixel_points(depth).transpose(1, 2)  # (B, HW, 3)
    dist = torch.cdist(pts, occ.centers)  # (B, HW, n)
    return (dist < occ.radii[:, None, :]).any(-1).reshape(B, 1, H, W)


# ----------------------------------------------------------------------------------------------------
# batched synthetic rendering (§5.1)
# ----------------------------------------------------------------------------------------------------
def _uniform(shape, lo: float, hi: float, generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (hi - lo) + lo


def _cube_rows(cube, batch: int) -> Tensor:
    """Cube edges (float, (3,) or (B, 3)) -> (B, 3) float64 CPU tensor."""
    c = torch.as_tensor(cube, dtype=torch.float64).detach().cpu()
    return torch.broadcast_to(c.expand(3) if c.ndim == 0 else c, (batch, 3)).clone()


@torch.no_grad()
def render_synthetic_batch(params: Tensor, mano_layer: ManoLayer, camera: Sequence[float], cube,
                           generator: torch.Generator | None = None, *, size: int = 128,
                           depth_range: tuple[float, float] = (500.0, 1200.0), shape_noise: float = 3.0,
                           center_jitter: float = 20.0, cube_jitter: float = 0.2, view_aug: str = "none",
                           occlusion: bool = True, occlusion_joints: tuple[int, int] = (3, 9),
                           occlusion_offset: float = 0.15, occlusion_radius: float = 0.3,
                           rasterizer: Callable[..., Rendered] | None = None) -> dict:
    """Render synthetic crops and labels from (B, 62) MANO parameters (official ``Render.forward``).

    Steps: betas += N(0, shape_noise^2); MANO in mm (file scale/translation applied); re-centred on the joint
    mean and placed at C = (0, 0, d), d ~ U(depth_range); rotated about C by the view augmentation (``none``
    in pre-training, ``octant`` = official fine-tuning, ``so3``); crop centre C += U(-jitter, jitter)^3 mm;
    cube *= U(1 - cube_jitter, 1 + cube_jitter); rendered straight into the crop (``render_crop``, M shared
    with the real loader) and normalised; optional occlusion spheres (§5.4) set pixels of ``depth`` to
    background.

    ``depth`` (masked) is the spec's "clean rendered image" (§4.4, §5.4, §6.1): the input of the transfer
    network G, and the image used for encoding pixel targets and for decoding predictions.
    ``depth_unoccluded`` is the same render before the occlusion masking (equal to ``depth`` with
    ``occlusion=False``); it is not a training target.

    Args:
        params: (B, 62) float on the device of ``mano_layer``.
        mano_layer: the MANO layer (closed faces are rendered).
        camera: full-frame (fx, fy, cx, cy) of the target data set.
        cube: crop cube edge in mm: float, (3,) or (B, 3).
        generator: CPU torch.Generator for every random draw (None = the global generator).
    Returns:
        dict of float32 tensors on the params' device: ``depth`` (masked), ``depth_unoccluded``
        (B, 1, S, S) in [-1, 1], background +1;
        ``joints_xyz_norm``, ``joints_uvd_norm`` (B, 14, 3) NYU order; ``joints_xyz_norm21``,
        ``joints_uvd_norm21`` (B, 21, 3) MANO order; ``verts_xyz_norm`` (B, 779, 3) (norm-uvd on demand:
        ``util.geometry.norm_xyz_to_norm_uvd``);
        ``center_xyz``, ``cube`` (B, 3) mm; ``M`` (B, 3, 3); ``params`` (B, 62) the rendered parameters (with
        the shape noise).
    """
    if view_aug not in VIEW_AUGS:
        raise ValueError(f"view_aug must be one of {VIEW_AUGS}, got {view_aug!r}")
    if params.ndim != 2 or params.shape[1] != PARAM_DIM:
        raise ValueError(f"params must be (B, {PARAM_DIM}), got {tuple(params.shape)}")
    dev, B = params.device, params.shape[0]
    p = ManoParams.from_vector(params.float().clone())
    p.betas.add_(torch.randn(B, p.betas.shape[1], generator=generator).to(dev) * shape_noise)
    rendered_params = p.to_vector()
    out = mano_layer.forward_dsf(rendered_params)
    centre0 = out.joints.mean(1, keepdim=True)
    verts, joints = out.vertices - centre0, out.joints - centre0  # hand centred at the origin
    rot = batch_rodrigues(random_rotations(B, generator, view_aug).to(dev))  # (B, 3, 3); identity for "none"
    verts, joints = verts @ rot.transpose(1, 2), joints @ rot.transpose(1, 2)
    hand_c = torch.zeros(B, 3, dtype=torch.float64)
    hand_c[:, 2] = _uniform(B, *depth_range, generator)
    shift = hand_c.to(dev, verts.dtype)[:, None]
    verts, joints = verts + shift, joints + shift
    center = hand_c + _uniform((B, 3), -center_jitter, center_jitter, generator)
    cube_t = _cube_rows(cube, B) * _uniform((B, 1), 1.0 - cube_jitter, 1.0 + cube_jitter, generator)
    center, cube_t = center.to(dev, torch.float32), cube_t.to(dev, torch.float32)

    unoccluded, _, M = render_normalised_crop(verts, mano_layer.faces_closed, center, cube_t, camera, size,
                                              rasterizer=rasterizer)  # (B, 1, S, S), bg +1

    def labels(x: Tensor) -> tuple[Tensor, Tensor]:
        return (xyz_to_norm_xyz(x, center, cube_t),
                uvd_to_norm_uvd(xyz_to_uvd(x, camera), center, cube_t, M, size))

    j_xyz, j_uvd = labels(joints)
    v_xyz = xyz_to_norm_xyz(verts, center, cube_t)  # no norm-uvd: no consumer needs the 779 projected points
    n_xyz, n_uvd = labels(nyu36_from_mano21(joints)[:, list(NYU_EVAL_14)])
    depth = unoccluded
    if occlusion:
        occ = occlusion_spheres(j_uvd, generator, occlusion_joints, occlusion_offset, occlusion_radius)
        depth = torch.where(occlusion_mask(unoccluded, occ), torch.ones_like(unoccluded), unoccluded)
    return {"depth": depth, "depth_unoccluded": unoccluded,
            "joints_xyz_norm": n_xyz, "joints_uvd_norm": n_uvd, "joints_xyz_norm21": j_xyz,
            "joints_uvd_norm21": j_uvd, "verts_xyz_norm": v_xyz,
            "center_xyz": center, "cube": cube_t, "M": M, "params": rendered_params}


class SyntheticRenderer(nn.Module):
    """:func:`render_synthetic_batch` with its settings bound; moves with ``.to(device)`` (the MANO buffers).

    ``forward(params (B, 62), generator=None) -> dict`` (see :func:`render_synthetic_batch`).
    """

    def __init__(self, mano_layer: ManoLayer, camera: Sequence[float], cube: float = 250.0,
                 **settings) -> None:
        super().__init__()
        self.mano = mano_layer
        self.camera = tuple(float(c) for c in camera)
        self.cube = float(cube)
        self.settings = settings

    def forward(self, params: Tensor, generator: torch.Generator | None = None, cube=None) -> dict:
        return render_synthetic_batch(params, self.mano, self.camera, self.cube if cube is None else cube,
                                      generator, **self.settings)

