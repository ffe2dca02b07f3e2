"""Synthetic pre-training data: MANO parameter sources and the batched synthetic renderer (docs/method.md §8.2).

Two halves, so that rendering runs batched in the training step and never mesh-by-mesh in workers:

- **parameters** (cheap, any DataLoader): :class:`SyntheticParams` holds (N, 62) DSF parameter vectors
  ``[axis-angle 3 | pose PCA 45 | betas 10 | scale 1 | transl 3]`` from the official HANDS19/20 fit files
  (:func:`load_hands_params`, located by :func:`find_hands_params`) or from the built-in pose source
  (:func:`builtin_pose_params`: the MANO file's own ``hands_coeffs``, 1554 captured poses in PCA space,
  interpolated, with noise and uniformly random global rotations; a documented substitute for the
  unreleased-source HANDS fits, docs/DEVIATIONS.md "Synthetic generation").
  :class:`InfiniteShuffleSampler` reshuffles forever, so the fine-tuning loop can draw any number of batches.
- **rendering** (batched, on the training device): :func:`render_synthetic_batch` / :class:`SyntheticRenderer`
  turn (B, 62) parameters into crops and labels with the keys and conventions of
  :class:`dataloader.nyu.NYUDataset` items (the 14 NYU joints), plus the 21 MANO-order joints and the mesh under
  ``mano_*`` keys, and the un-occluded depth. The random ranges are one frozen :class:`SyntheticSettings`.

Which synthetic image is which (docs/method.md §6, §8.2, §9): ``depth`` is the clean render **after** the
occlusion masking, i.e. the image the transfer network G receives and the one against which pixel targets are
encoded and predictions decoded; ``depth_unoccluded`` is the render before the masking (inspection and tests
only, never a training target).
"""
from __future__ import annotations

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
#: view augmentations of synthetic crops (config ``pretrain_view_aug`` / ``finetune_view_aug``)
VIEW_AUGS = ("none", "octant", "so3")
#: global-rotation distributions of the built-in pose source (config ``synth_builtin_rotation``)
BUILTIN_ROTATIONS = ("so3", "cone", "upright")
#: axis-angle turning the MANO rest hand (palm normal -y) so that its palm faces the camera (normal -z)
PALM_TO_CAMERA = (math.pi / 2.0, 0.0, 0.0)


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

    Looks for ``{prefix}-*.txt`` in ``root/hands20/posePara_lm_collosion`` (the official layout,
    docs/formats.md §1.8), then in ``root/posePara_lm_collosion``. A directory holding any of the five files is
    returned even when the set is incomplete, so that :func:`load_hands_params` names the missing file instead of
    silently falling back to the built-in source.
    """
    base = Path(root)
    for d in (base / "hands20" / "posePara_lm_collosion", base / "posePara_lm_collosion"):
        if any((d / f"{prefix}-{name}.txt").is_file() for name in HANDS_FILE_PARTS):
            return d
    return None


def random_rotations(n: int, generator: torch.Generator | None = None, mode: str = "so3") -> Tensor:
    """(n, 3) axis-angle rotations (float32, CPU).

    ``so3``: uniform on SO(3) (normalised Gaussian quaternion); ``octant``: each component U(0, 2 pi) (the
    official fine-tuning view augmentation, axis always in the positive octant, docs/DEVIATIONS.md "Synthetic
    generation"); ``none``: zeros.
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


def cone_rotations(n: int, rng: np.random.Generator, half_angle_deg: float) -> np.ndarray:
    """(n, 3) float64 axis-angle rotations of a camera-facing hand.

    The MANO rest hand is first turned palm-to-camera (:data:`PALM_TO_CAMERA`), then rolled about the viewing
    axis by U(0, 2 pi), then tilted so that its palm normal is uniform on the spherical cap of ``half_angle_deg``
    around the direction to the camera (-z). 180 degrees gives palm normals uniform on the sphere.
    """
    from scipy.spatial.transform import Rotation

    if not 0.0 <= half_angle_deg <= 180.0:
        raise ValueError(f"cone half-angle must be in [0, 180] degrees, got {half_angle_deg!r}")
    roll = rng.uniform(0.0, 2.0 * math.pi, n)
    cos_tilt = rng.uniform(math.cos(math.radians(half_angle_deg)), 1.0, n)  # uniform area on the cap
    tilt = np.arccos(np.clip(cos_tilt, -1.0, 1.0))
    azimuth = rng.uniform(0.0, 2.0 * math.pi, n)
    tilt_axis = np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros(n)], 1)  # perpendicular to the view axis
    rot = (Rotation.from_rotvec(tilt_axis * tilt[:, None])
           * Rotation.from_rotvec(np.stack([np.zeros(n), np.zeros(n), roll], 1))
           * Rotation.from_rotvec(np.tile(PALM_TO_CAMERA, (n, 1))))
    return rot.as_rotvec()


#: ``upright`` rotations: (yaw, pitch, roll) half-ranges in degrees about the fingers-up, palm-to-camera hand and the
#: probability of showing the back of the hand (a 180 degree yaw); the ranges of the stand-in scenes
#: (:class:`dataloader.standin_nyu.StandinConfig`), i.e. the views of a hand held up in front of a sensor
UPRIGHT_RANGES = (70.0, 35.0, 45.0, 0.5)


def upright_rotations(n: int, rng: np.random.Generator, ranges: tuple[float, float, float, float] = UPRIGHT_RANGES
                      ) -> np.ndarray:
    """(n, 3) float64 axis-angle rotations of a hand held up in front of the camera.

    The MANO rest hand is turned palm-to-camera (:data:`PALM_TO_CAMERA`, fingers along -x), then 90 degrees about
    the viewing axis (fingers up, -y), then by Euler angles ``zxy`` = (roll, pitch, yaw) drawn uniformly in
    +-``ranges[2]``, +-``ranges[1]``, +-``ranges[0]``, with 180 degrees added to the yaw with probability
    ``ranges[3]`` (back of the hand to the camera). Natural capture views, like the HANDS fits the official
    pre-training draws its rotations from, and like the stand-in's real frames.
    """
    from scipy.spatial.transform import Rotation

    yaw_r, pitch_r, roll_r, back_p = ranges
    yaw = rng.uniform(-yaw_r, yaw_r, n) + 180.0 * (rng.random(n) < back_p)
    euler = np.stack([rng.uniform(-roll_r, roll_r, n), rng.uniform(-pitch_r, pitch_r, n), yaw], 1)
    rot = (Rotation.from_euler("zxy", euler, degrees=True) * Rotation.from_rotvec([0.0, 0.0, math.pi / 2.0])
           * Rotation.from_rotvec(np.tile(PALM_TO_CAMERA, (n, 1))))
    return rot.as_rotvec()


def builtin_pose_params(hands_coeffs: np.ndarray | None, n: int, seed: int = 0, pose_noise: float = 0.2,
                        rotation: str = "so3", cone_deg: float = 90.0) -> np.ndarray:
    """(n, 62) parameter vectors from the MANO file's captured poses (the built-in pose source).

    Each pose is ``(1 - t) c_i + t c_j + pose_noise * sigma * N(0, 1)`` for two random rows of
    ``hands_coeffs`` (K, 45), t ~ U(0, 1), sigma the per-component standard deviation of the rows; global
    rotation ``so3`` (uniform, :func:`random_rotations`) or ``cone`` (camera-facing within ``cone_deg``,
    :func:`cone_rotations`), see docs/DEVIATIONS.md "Synthetic generation"; betas 0 (the renderer adds its
    shape noise), scale 1, translation 0 (the renderer re-centres the hand). Without ``hands_coeffs`` (a file
    lacking them) poses are N(0, 1) per PCA component, with a warning.
    """
    if rotation not in BUILTIN_ROTATIONS:
        raise ValueError(f"rotation must be one of {BUILTIN_ROTATIONS}, got {rotation!r}")
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
    if rotation == "so3":
        rot = random_rotations(n, gen, "so3").numpy()
    elif rotation == "cone":
        rot = cone_rotations(n, rng, cone_deg)
    else:
        rot = upright_rotations(n, rng)
    out[:, LAYOUT_AXIS_ANGLE.global_orient] = rot
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

    def __init__(self, params: np.ndarray, *, cube: float, source: str = "array") -> None:
        p = np.asarray(params, np.float32)
        if p.ndim != 2 or p.shape[1] != PARAM_DIM or len(p) == 0:
            raise ValueError(f"params must be (N, {PARAM_DIM}) with N > 0, got {p.shape}")
        self.params = torch.from_numpy(p)
        self.cube = torch.full((3,), float(cube))
        self.source = source

    @classmethod
    def from_source(cls, hands_para_dir: str = "", hands_coeffs: np.ndarray | None = None,
                    n_builtin: int = 20000, seed: int = 0, pose_noise: float = 0.2, *,
                    cube: float, search_roots: Sequence = (), rotation: str = "so3",
                    cone_deg: float = 90.0, announce: bool = True) -> SyntheticParams:
        """The pose source of pre-training, chosen in this order:

        1. ``hands_para_dir`` when set (its files must be there);
        2. the first of ``search_roots`` (e.g. the data root's parent, then the data root) where
           :func:`find_hands_params` finds the official files;
        3. the built-in source (``n_builtin`` vectors from ``hands_coeffs``, global rotation ``rotation`` /
           ``cone_deg`` as :func:`builtin_pose_params`).

        The choice is kept in ``.source`` (``"hands files: <dir> (N vectors)"`` or ``"built-in: ..."``) and,
        with ``announce``, printed as one line (a run must say when it trains on the substitute poses).
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
            params = builtin_pose_params(hands_coeffs, n_builtin, seed, pose_noise, rotation, cone_deg)
            kind = "MANO hands_coeffs" if hands_coeffs is not None and len(hands_coeffs) >= 2 else "N(0, 1)"
            rot = {"so3": "uniform SO(3)", "cone": f"camera-facing cone {cone_deg:g} deg",
                   "upright": "upright (fingers up, palm or back to the camera)"}[rotation]
            where = ", ".join(str(r) for r in search_roots) or "no search roots"
            source = (f"built-in: {n_builtin} vectors from {kind}, global rotation {rot} "
                      f"(no hands-*.txt files under {where}; set hands_para_dir)")
        if announce:
            print(f"synthetic pose source: {source}", flush=True)
        return cls(params, cube=cube, source=source)

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
# occlusion augmentation (docs/method.md §8.2)
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

    Pixel centres and depths as :func:`util.geometry.pixel_points` (convention (a) of docs/method.md §2.3).
    """
    B, _, H, W = depth.shape
    pts = pixel_points(depth).transpose(1, 2)  # (B, HW, 3)
    dist = torch.cdist(pts, occ.centers)  # (B, HW, n)
    return (dist < occ.radii[:, None, :]).any(-1).reshape(B, 1, H, W)


# ----------------------------------------------------------------------------------------------------
# batched synthetic rendering (docs/method.md §8.2)
# ----------------------------------------------------------------------------------------------------
def _uniform(shape, lo: float, hi: float, generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (hi - lo) + lo


def _cube_rows(cube, batch: int) -> Tensor:
    """Cube edges (float, (3,) or (B, 3)) -> (B, 3) float64 CPU tensor."""
    c = torch.as_tensor(cube, dtype=torch.float64).detach().cpu()
    return torch.broadcast_to(c.expand(3) if c.ndim == 0 else c, (batch, 3)).clone()


@dataclass(frozen=True)
class SyntheticSettings:
    """Random rendering parameters of synthetic crops (official ``Render.forward``; docs/method.md §8.2,
    ranges of the official code as defaults). Validated at construction, so a bad value fails here and not at
    the first batch; unknown names fail as for any dataclass.

    Attributes:
        cube: crop cube edge before jitter, mm (the target data set's cube; NYU 250).
        size: crop size in pixels.
        depth_range: (min, max) hand distance on the optical axis, mm (NYU 500-1200).
        shape_noise: std of the N(0, shape_noise^2) noise added to each beta.
        center_jitter: crop centre jitter, U(-j, j) mm per axis.
        cube_jitter: cube scale factor U(1 - j, 1 + j), one factor for all three axes.
        view_aug: view rotation about the hand centre, one of :data:`VIEW_AUGS` (official: ``none`` in
            pre-training, ``octant`` in fine-tuning).
        occlusion: occlusion spheres at joints (docs/method.md §8.2).
        occlusion_joints: (min, max) number of masked joints per batch.
        occlusion_offset: sphere centre offset U(-o, o) per axis, norm-uvd units.
        occlusion_radius: max sphere radius (U(0, r)), norm-uvd units.
    """

    cube: float
    size: int = 128
    depth_range: tuple[float, float] = (500.0, 1200.0)
    shape_noise: float = 3.0
    center_jitter: float = 20.0
    cube_jitter: float = 0.2
    view_aug: str = "none"
    occlusion: bool = True
    occlusion_joints: tuple[int, int] = (3, 9)
    occlusion_offset: float = 0.15
    occlusion_radius: float = 0.3

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"SyntheticSettings.{name} must be {expected}, got {getattr(self, name)!r}")

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, "a finite number")
            object.__setattr__(self, name, float(value))
            return float(value)

        if number("cube") <= 0:
            raise bad("cube", "> 0 mm")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise bad("size", "a positive int")
        try:
            lo, hi = (float(v) for v in self.depth_range)
        except (TypeError, ValueError):
            raise bad("depth_range", "(min, max) mm") from None
        if not 0 < lo < hi < math.inf:
            raise bad("depth_range", "(min, max) mm with 0 < min < max")
        object.__setattr__(self, "depth_range", (lo, hi))
        for name in ("shape_noise", "center_jitter", "occlusion_offset", "occlusion_radius"):
            if number(name) < 0:
                raise bad(name, ">= 0")
        if not 0 <= number("cube_jitter") < 1:
            raise bad("cube_jitter", "in [0, 1)")
        if self.view_aug not in VIEW_AUGS:
            raise bad("view_aug", f"one of {VIEW_AUGS}")
        if not isinstance(self.occlusion, bool):
            raise bad("occlusion", "a bool")
        try:
            n_lo, n_hi = (int(v) for v in self.occlusion_joints)
        except (TypeError, ValueError):
            raise bad("occlusion_joints", "(min, max) joint counts") from None
        if not 1 <= n_lo <= n_hi:
            raise bad("occlusion_joints", "(min, max) with 1 <= min <= max")
        object.__setattr__(self, "occlusion_joints", (n_lo, n_hi))


@torch.no_grad()
def render_synthetic_batch(params: Tensor, mano_layer: ManoLayer, camera: Sequence[float],
                           settings: SyntheticSettings, generator: torch.Generator | None = None, *,
                           cube=None, rasterizer: Callable[..., Rendered] | None = None) -> dict:
    """Render synthetic crops and labels from (B, 62) MANO parameters (official ``Render.forward``).

    Steps: betas += N(0, shape_noise^2); MANO in mm (file scale/translation applied); re-centred on the joint
    mean and placed at C = (0, 0, d), d ~ U(depth_range); rotated about C by the view augmentation (``none``
    in pre-training, ``octant`` = official fine-tuning, ``so3``); crop centre C += U(-jitter, jitter)^3 mm;
    cube *= U(1 - cube_jitter, 1 + cube_jitter); rendered straight into the crop (``render_crop``, M shared
    with the real loader; docs/DEVIATIONS.md "Data and crops") and normalised; optional occlusion spheres set
    pixels of ``depth`` to background.

    ``depth`` (masked) is the method's "clean rendered image" (docs/method.md §8.2): the input of the transfer
    network G, and the image used for encoding pixel targets and for decoding predictions.
    ``depth_unoccluded`` is the same render before the occlusion masking (equal to ``depth`` with
    ``occlusion=False``); it is not a training target.

    Args:
        params: (B, 62) float on the device of ``mano_layer``.
        mano_layer: the MANO layer (closed faces are rendered).
        camera: full-frame (fx, fy, cx, cy) of the target data set.
        settings: :class:`SyntheticSettings` (the random rendering ranges).
        generator: CPU torch.Generator for every random draw (None = the global generator).
        cube: per-call cube edge in mm (float, (3,) or (B, 3)) instead of ``settings.cube``.
        rasterizer: depth rasterizer (default: the built-in one).
    Returns:
        dict of float32 tensors on the params' device: ``depth`` (masked), ``depth_unoccluded``
        (B, 1, S, S) in [-1, 1], background +1;
        ``joints_xyz_norm``, ``joints_uvd_norm`` (B, 14, 3) the 14 NYU joints (keys of the real loader);
        ``mano_joints_xyz_norm``, ``mano_joints_uvd_norm`` (B, 21, 3) the 21 MANO-order joints (the targets of
        the synthetic losses); ``mano_verts_xyz_norm`` (B, 779, 3) the closed MANO mesh (norm-uvd on demand:
        ``util.geometry.norm_xyz_to_norm_uvd``);
        ``center_xyz``, ``cube`` (B, 3) mm; ``M`` (B, 3, 3); ``params`` (B, 62) the rendered parameters (with
        the shape noise).
    """
    if not isinstance(settings, SyntheticSettings):
        raise TypeError(f"settings must be a SyntheticSettings, got {type(settings).__name__}")
    if params.ndim != 2 or params.shape[1] != PARAM_DIM:
        raise ValueError(f"params must be (B, {PARAM_DIM}), got {tuple(params.shape)}")
    st = settings
    dev, B = params.device, params.shape[0]
    p = ManoParams.from_vector(params.float().clone())
    p.betas.add_(torch.randn(B, p.betas.shape[1], generator=generator).to(dev) * st.shape_noise)
    rendered_params = p.to_vector()
    out = mano_layer.forward_dsf(rendered_params)
    centre0 = out.joints.mean(1, keepdim=True)
    verts, joints = out.vertices - centre0, out.joints - centre0  # hand centred at the origin
    rot = batch_rodrigues(random_rotations(B, generator, st.view_aug).to(dev))  # (B, 3, 3); identity for "none"
    verts, joints = verts @ rot.transpose(1, 2), joints @ rot.transpose(1, 2)
    hand_c = torch.zeros(B, 3, dtype=torch.float64)
    hand_c[:, 2] = _uniform(B, *st.depth_range, generator)
    shift = hand_c.to(dev, verts.dtype)[:, None]
    verts, joints = verts + shift, joints + shift
    center = hand_c + _uniform((B, 3), -st.center_jitter, st.center_jitter, generator)
    cube_t = _cube_rows(st.cube if cube is None else cube, B) * _uniform((B, 1), 1.0 - st.cube_jitter,
                                                                          1.0 + st.cube_jitter, generator)
    center, cube_t = center.to(dev, torch.float32), cube_t.to(dev, torch.float32)

    unoccluded, _, M = render_normalised_crop(verts, mano_layer.faces_closed, center, cube_t, camera, st.size,
                                              rasterizer=rasterizer)  # (B, 1, S, S), bg +1

    def labels(x: Tensor) -> tuple[Tensor, Tensor]:
        return (xyz_to_norm_xyz(x, center, cube_t),
                uvd_to_norm_uvd(xyz_to_uvd(x, camera), center, cube_t, M, st.size))

    j_xyz, j_uvd = labels(joints)
    v_xyz = xyz_to_norm_xyz(verts, center, cube_t)  # no norm-uvd: no consumer needs the 779 projected points
    n_xyz, n_uvd = labels(nyu36_from_mano21(joints)[:, list(NYU_EVAL_14)])
    depth = unoccluded
    if st.occlusion:
        occ = occlusion_spheres(j_uvd, generator, st.occlusion_joints, st.occlusion_offset, st.occlusion_radius)
        depth = torch.where(occlusion_mask(unoccluded, occ), torch.ones_like(unoccluded), unoccluded)
    return {"depth": depth, "depth_unoccluded": unoccluded,
            "joints_xyz_norm": n_xyz, "joints_uvd_norm": n_uvd,
            "mano_joints_xyz_norm": j_xyz, "mano_joints_uvd_norm": j_uvd, "mano_verts_xyz_norm": v_xyz,
            "center_xyz": center, "cube": cube_t, "M": M, "params": rendered_params}


class SyntheticRenderer(nn.Module):
    """:func:`render_synthetic_batch` with its camera and settings bound; moves with ``.to(device)`` (the MANO
    buffers).

    Args:
        mano_layer: the MANO layer.
        camera: full-frame (fx, fy, cx, cy) of the target data set.
        settings: :class:`SyntheticSettings`.
        rasterizer: depth rasterizer (default: the built-in one).

    ``forward(params (B, 62), generator=None, cube=None) -> dict`` (see :func:`render_synthetic_batch`).
    """

    def __init__(self, mano_layer: ManoLayer, camera: Sequence[float], settings: SyntheticSettings,
                 rasterizer: Callable[..., Rendered] | None = None) -> None:
        super().__init__()
        if not isinstance(settings, SyntheticSettings):
            raise TypeError(f"settings must be a SyntheticSettings, got {type(settings).__name__}")
        self.mano = mano_layer
        self.camera = tuple(float(c) for c in camera)
        self.settings = settings
        self.rasterizer = rasterizer

    def forward(self, params: Tensor, generator: torch.Generator | None = None, cube=None) -> dict:
        return render_synthetic_batch(params, self.mano, self.camera, self.settings, generator, cube=cube,
                                      rasterizer=self.rasterizer)
