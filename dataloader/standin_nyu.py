"""Generate an NYU-format stand-in tree from a MANO(-format) model (docs/formats.md §3.8; tests and the demo).

``python -m dataloader.standin_nyu --out DIR --train N --test M [--seed S] [--mano PATH] [--views 3]``

Writes ``DIR/{train,test}/`` with ``depth_{1,2,3}_{frame:07d}.png`` (hand + forearm + optional background wall
through a Kinect-like sensor model, :mod:`dataloader.sensor`; missing/far = 2001 like real NYU),
``synthdepth_*`` (the clean hand alone, background 0), ``joint_data.mat`` (3 views x N x 36 x 3; xyz y-up, uvd
by projection; the 21 MANO joints plus the 15 NYU-only joints of :mod:`dataloader.nyu_joints`), the per-view
centre files ``center_{split}_{v}_refined.txt`` (v = 0, 1, 2; y down, DSF convention) and the single V2V-style
``center_{split}_refined.txt`` (view 1, y up). Centres = mean of the 14 evaluation joints + N(0, 12^2) mm per
axis. ``DIR/standin_nyu.json`` records the settings (:func:`ensure_standin_nyu` regenerates only when they
change). ``DIR/posePara_lm_collosion/nyu-{split}-{v}-{glb,pose,shape,scale,trans}.txt`` (v = 0, 1, 2) are the
"released MANO fits" in the official file format (docs/method.md §3): the exact 62-d parameters of every frame
and view, placed in the camera frame (mm, y down): MANO(fit) gives the frame's joint labels
(:mod:`dataloader.nyu_fits`).

``--mismatch thick|smooth`` (:mod:`dataloader.standin_mismatch`) renders the hands with a surface MANO's
shape space cannot represent (the skeleton, labels and fits stay MANO's): the model-mismatch benchmark.

Views: view 1 sees the hand "frontally" (palm or back towards the camera, fingers roughly up, random
yaw/pitch/roll); views 2 and 3 see the *same* posed hand and forearm turned by ``VIEW_TILTS`` (about x: from
above; about y: from the side) at an independently drawn image position and distance, with their own
background. So all three views hold the same articulation, like NYU's three Kinects, but not a calibrated rig.

The default distribution deliberately differs from the synthetic pre-training data
(:mod:`dataloader.synthetic`: captured poses, uniform rotations, hand on the optical axis, beta noise sigma
3): Gaussian poses in PCA space, frontal views, off-axis hands at 550-1000 mm, beta ~ N(0, 1), scale
0.92-1.08, plus forearm, wall and sensor effects.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dataloader.depth_io import depth_png_name, write_centers, write_depth_png, write_joint_data
from dataloader.nyu_joints import hand_axes, nyu36_from_mano21
from dataloader.nyu_fits import FITS_DIR, write_nyu_fits
from dataloader.standin_mismatch import MISMATCHES, apply_mismatch
from dataloader.sensor import SensorModel, apply_sensor_roi
from render.mano_io import ManoModel, load_mano
from render.mano_layer import ManoLayer
from render.mano_params import LAYOUT_AXIS_ANGLE, PARAM_DIM
from render.rasterizer import render_depth
from util.camera import NYU_CAMERA
from util.geometry import flip_y, uvd_to_xyz, xyz_to_uvd
from util.joints import NYU_EVAL_14, WRIST_LOOP_VERTEX_IDS

#: extra rotation of views 2 (about x) and 3 (about y), degrees
VIEW_TILTS = ((0.0, 0.0), (70.0, 0.0), (0.0, -70.0))
INFO_FILE = "standin_nyu.json"
VIEW_MODES = ("render", "copy")
_ARM_RING, _ARM_RINGS = 16, 8
#: the sensor effects other than quantisation are simulated in the hand's bounding box grown by this (px)
ROI_MARGIN = 48


@dataclass(frozen=True)
class StandinConfig:
    """Scene distribution of the stand-in (mm, degrees, pixels)."""

    pose_scale: float = 0.8  # PCA coefficients: mean + pose_scale * std * N(0, 1) (stats of hands_coeffs)
    shape_std: float = 1.0
    scale_range: tuple[float, float] = (0.92, 1.08)
    depth_range: tuple[float, float] = (550.0, 1000.0)
    u_range: tuple[float, float] = (200.0, 440.0)  # image position of the hand centre
    v_range: tuple[float, float] = (160.0, 320.0)
    yaw: float = 70.0  # about the vertical axis, around palm- or back-facing (50 % each)
    pitch: float = 35.0
    roll: float = 45.0
    wrist_bend: float = 20.0  # forearm direction deviation
    arm_length: tuple[float, float] = (160.0, 260.0)
    background_prob: float = 0.7
    background_gap: tuple[float, float] = (150.0, 700.0)  # wall distance behind the hand
    background_tilt: float = 25.0
    center_noise: float = 12.0
    sensor: SensorModel = field(default_factory=SensorModel)


# ----------------------------------------------------------------------------------------------------
# scene sampling
# ----------------------------------------------------------------------------------------------------
def _hand_frame(joints: np.ndarray) -> np.ndarray:
    """(B, 21, 3) joints -> (B, 3, 3) columns: finger direction f, thumb-side lateral l (:func:`hand_axes`),
    dorsal d = f x l. Translation-invariant."""
    f, lat = hand_axes(joints)
    return np.stack([f, lat, np.cross(f, lat)], axis=2)


def _frontal_rotations(frames: np.ndarray, cfg: StandinConfig, rng: np.random.Generator) -> np.ndarray:
    """(B, 3, 3) rotations taking each posed hand (axes ``frames`` from :func:`_hand_frame`) to 'fingers up,
    palm (or back) to the camera' + random yaw / pitch / roll.

    For a right hand f x l points out of the back of the hand; target: f -> -y (up), l -> +x, d -> +z (palm
    facing the camera in the y-down camera frame); a 180 degree yaw (half the frames) shows the back instead.
    """
    n = frames.shape[0]
    target = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # columns: -y, +x, +z
    base = target[None] @ np.transpose(frames, (0, 2, 1))
    yaw = rng.uniform(-cfg.yaw, cfg.yaw, n) + 180.0 * (rng.random(n) < 0.5)
    euler = np.stack([rng.uniform(-cfg.roll, cfg.roll, n), rng.uniform(-cfg.pitch, cfg.pitch, n), yaw], 1)
    return Rotation.from_euler("zxy", euler, degrees=True).as_matrix() @ base


def sample_standin_params(hands_coeffs: np.ndarray | None, n: int, cfg: StandinConfig,
                          rng: np.random.Generator) -> np.ndarray:
    """(n, 62) DSF parameters of the stand-in's distribution (root rotation 0: views add their rotation)."""
    if hands_coeffs is not None and len(hands_coeffs) > 1:
        mean, std = hands_coeffs.mean(0), hands_coeffs.std(0)
    else:
        mean, std = np.zeros(45), np.ones(45)
    out = np.zeros((n, PARAM_DIM), np.float32)
    out[:, LAYOUT_AXIS_ANGLE.pose_pca] = mean + cfg.pose_scale * std * rng.standard_normal((n, 45))
    out[:, LAYOUT_AXIS_ANGLE.betas] = cfg.shape_std * rng.standard_normal((n, 10))
    out[:, LAYOUT_AXIS_ANGLE.scale] = rng.uniform(*cfg.scale_range, (n, 1))
    return out


def forearm_mesh(verts: np.ndarray, frame: np.ndarray, cfg: StandinConfig, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A tapered elliptic tube continuing the wrist. verts (B, 779, 3) posed; frame (B, 3, 3) the hand axes of
    :func:`_hand_frame` in the same frame.

    Returns vertices (B, 8 * 16, 3) and faces (8 - 1) * 16 * 2 x 3 (local ids).
    """
    B = verts.shape[0]
    f, lat, dor = frame[..., 0], frame[..., 1], frame[..., 2]
    loop = verts[:, list(WRIST_LOOP_VERTEX_IDS)]
    centre = loop.mean(1)
    rel = loop - centre[:, None]
    a = np.abs((rel * lat[:, None]).sum(2)).max(1) * 1.05  # half-width of the wrist
    b = np.abs((rel * dor[:, None]).sum(2)).max(1) * 1.05  # half-thickness
    bend = Rotation.from_rotvec(rng.normal(0, 1, (B, 3)) * np.deg2rad(cfg.wrist_bend) / math.sqrt(3))
    bend = bend.as_matrix()
    axis = np.einsum("bij,bj->bi", bend, -f)
    length = rng.uniform(*cfg.arm_length, B)
    s = np.linspace(0.0, 1.0, _ARM_RINGS)
    theta = np.linspace(0.0, 2 * math.pi, _ARM_RING, endpoint=False)
    grow = 1.0 + 0.3 * s  # the forearm widens away from the wrist
    start = centre + 8.0 * f  # start slightly inside the palm: no gap at the wrist
    ring_c = start[:, None] + (length[:, None] * s[None] + 8.0)[..., None] * axis[:, None]  # (B, R, 3)
    cos_t = (a[:, None, None] * grow[None, :, None] * np.cos(theta)[None, None])[..., None]  # (B, R, N, 1)
    sin_t = (b[:, None, None] * grow[None, :, None] * np.sin(theta)[None, None])[..., None]
    off = cos_t * lat[:, None, None] + sin_t * dor[:, None, None]
    arm = (ring_c[:, :, None] + off).reshape(B, -1, 3)
    faces = []
    for r in range(_ARM_RINGS - 1):
        for k in range(_ARM_RING):
            p, q = r * _ARM_RING + k, r * _ARM_RING + (k + 1) % _ARM_RING
            faces += [(p, q, p + _ARM_RING), (q, q + _ARM_RING, p + _ARM_RING)]
    return arm, np.asarray(faces, np.int64)


def wall_depth(n: int, hand_z: np.ndarray, camera, image_size, cfg: StandinConfig, rng: np.random.Generator
               ) -> np.ndarray:
    """(n, H, W) depth of a tilted wall behind each hand (0 where absent or behind the camera).

    Plane n.X = n.P hit by the pixel ray r = ((u - cx)/fx, (v - cy)/fy, 1) at z = n.P / n.r (separable in u,
    v).
    """
    H, W = image_size
    fx, fy, cx, cy = camera
    ru = ((np.arange(W) - cx) / fx).astype(np.float32)
    rv = ((np.arange(H) - cy) / fy).astype(np.float32)
    out = np.zeros((n, H, W), np.float32)
    for i in range(n):
        if rng.random() >= cfg.background_prob:
            continue
        angles = rng.uniform(-cfg.background_tilt, cfg.background_tilt, 2)
        tilt = Rotation.from_euler("xy", angles, degrees=True)
        nx, ny, nz = tilt.apply([0.0, 0.0, 1.0])
        dist = nz * (hand_z[i] + rng.uniform(*cfg.background_gap))  # n.P with P on the optical axis
        denom = (ny * rv)[:, None] + (nx * ru + nz)[None, :]
        out[i] = np.where(denom > 1e-6, dist / np.maximum(denom, 1e-6), 0.0)
    return out


# ----------------------------------------------------------------------------------------------------
# rendering one batch of frames for all views
# ----------------------------------------------------------------------------------------------------
def _place(n: int, camera, cfg: StandinConfig, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) hand-centre positions (mm, y down) at a random image position and depth."""
    z = rng.uniform(*cfg.depth_range, n)
    u, v = rng.uniform(*cfg.u_range, n), rng.uniform(*cfg.v_range, n)
    return uvd_to_xyz(np.stack([u, v, z], 1), camera)


def _hand_boxes(mask: torch.Tensor, margin: int = ROI_MARGIN) -> list[tuple[int, int, int, int]]:
    """Per frame (i0, i1, j0, j1): bounding box of the hand pixels (B, H, W) grown by ``margin`` px."""
    B, H, W = mask.shape
    rows, cols = mask.any(2), mask.any(1)
    boxes = []
    for b in range(B):
        r, c = torch.nonzero(rows[b]).squeeze(1), torch.nonzero(cols[b]).squeeze(1)
        if r.numel() == 0:
            boxes.append((0, 0, 0, 0))
            continue
        boxes.append((max(int(r[0]) - margin, 0), min(int(r[-1]) + 1 + margin, H),
                      max(int(c[0]) - margin, 0), min(int(c[-1]) + 1 + margin, W)))
    return boxes


def render_standin_batch(layer: ManoLayer, params: np.ndarray, views: int, camera, image_size,
                         cfg: StandinConfig, rng: np.random.Generator, mismatch: str = "none",
                         mismatch_amount: float | None = None) -> dict:
    """Render B frames x ``views`` views (batched rasterisation, sensor model applied).

    ``mismatch`` (:data:`dataloader.standin_mismatch.MISMATCHES`) deforms the rendered hand surface only
    (joints, labels and fits stay those of MANO(params)); it draws no random numbers and the sensor noise
    has its own stream, so the scenes (poses, views, positions, walls, centres) of a seed are the same with
    and without it.

    Returns {'depth', 'synth', 'joints36', 'verts', 'fits'}: lists over the views of (B, H, W) sensor depth mm
    (2001 = invalid), (B, H, W) clean hand depth mm (0 = none), (B, 36, 3) joints mm (y down), (B, 779, 3)
    rendered hand mesh mm (y down; faces ``layer.faces_closed``), (B, 62) DSF parameters of the hand in the
    view's camera frame (``layer.forward_dsf(fit)`` gives its MANO joints / undeformed mesh in mm, y down).
    """
    B = params.shape[0]
    with torch.no_grad():
        mano = layer.forward_dsf(torch.from_numpy(params))
    verts, joints = mano.vertices.double().numpy(), mano.joints.double().numpy()
    if mismatch != "none":
        verts = apply_mismatch(verts, layer.faces_closed.numpy(), layer.weights.double().numpy(), mismatch,
                               mismatch_amount)
    frame = _hand_frame(joints)  # hand axes: shared by the forearm and the view rotation
    # the sensor model draws a content-dependent number of values: its own stream keeps every scene draw of
    # a seed independent of the rendered surface (mismatch options render the same scenes)
    sensor_rng = np.random.default_rng(int(rng.integers(2**63)))
    arm, arm_faces = forearm_mesh(verts, frame, cfg, rng)
    centre = joints.mean(1, keepdims=True)
    scene = np.concatenate([verts, arm], 1) - centre  # hand centred at the origin
    joints = joints - centre
    hand_faces = layer.faces_closed
    faces = torch.cat([hand_faces, torch.from_numpy(arm_faces) + verts.shape[1]])
    rot1 = _frontal_rotations(frame, cfg, rng)
    out: dict[str, list] = {"depth": [], "synth": [], "joints36": [], "verts": [], "fits": []}
    for view in range(views):
        rot = Rotation.from_euler("xy", VIEW_TILTS[view], degrees=True).as_matrix() @ rot1
        pos = _place(B, camera, cfg, rng)
        vt = torch.from_numpy(np.einsum("bij,bvj->bvi", rot, scene) + pos[:, None]).float()
        jt = np.einsum("bij,bvj->bvi", rot, joints) + pos[:, None]
        ren = render_depth(vt, faces, camera, image_size)
        hand_mask = ren.mask & (ren.face_index < hand_faces.shape[0])
        wall = torch.from_numpy(wall_depth(B, pos[:, 2], camera, image_size, cfg, rng))
        clean = torch.where(ren.mask & ((wall <= 0) | (ren.depth < wall)), ren.depth, wall)
        out["depth"].append(apply_sensor_roi(clean.numpy(), _hand_boxes(hand_mask), cfg.sensor, sensor_rng))
        out["synth"].append(torch.where(hand_mask, ren.depth, torch.zeros_like(ren.depth)).numpy())
        out["joints36"].append(nyu36_from_mano21(jt))
        out["verts"].append(vt[:, :verts.shape[1]].double().numpy())
        out["fits"].append(_view_fits(layer, params, rot, jt))
    return out


def _view_fits(layer: ManoLayer, params: np.ndarray, rot: np.ndarray, joints_view: np.ndarray) -> np.ndarray:
    """(B, 62) parameters whose MANO joints are ``joints_view`` (B, 21, 3) mm: root rotation = the view
    rotation ``rot`` (B, 3, 3) (params have a zero root); MANO turns about the wrist joint, so the remaining
    offset is one translation per frame (mean residual over the 21 joints)."""
    fits = params.astype(np.float64)
    fits[:, LAYOUT_AXIS_ANGLE.global_orient] = Rotation.from_matrix(rot).as_rotvec()
    fits[:, LAYOUT_AXIS_ANGLE.transl] = 0.0
    with torch.no_grad():
        posed = layer.forward_dsf(torch.from_numpy(fits).float()).joints.double().numpy()
    fits[:, LAYOUT_AXIS_ANGLE.transl] = (joints_view - posed).mean(1)
    return fits


# ----------------------------------------------------------------------------------------------------
# the tree
# ----------------------------------------------------------------------------------------------------
def _write_png(path: Path, depth_mm: np.ndarray) -> None:
    if path.exists():  # it may be a hard link of another view (view_mode='copy'): never write through it
        path.unlink()
    # fast zlib level: generation time is dominated by PNG writing otherwise
    write_depth_png(path, depth_mm, compression=1)


def load_model(mano_path: str | None = None) -> ManoModel:
    """The MANO-format model at ``mano_path``, or the procedural stand-in (:func:`render.standin.load_standin`:
    read back through the same restricted reader as the real file)."""
    if mano_path:
        return load_mano(mano_path)
    from render.standin import load_standin

    return load_standin()


def _write_split(split_dir: Path, layer: ManoLayer, coeffs: np.ndarray | None, n: int, views: int,
                 seed: int, cfg: StandinConfig, batch_size: int, camera, image_size, view_mode: str,
                 mismatch: str = "none", mismatch_amount: float | None = None) -> None:
    split_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rendered = views if view_mode == "render" else 1
    joints = np.zeros((rendered, n, 36, 3))
    fits = np.zeros((rendered, n, PARAM_DIM))
    # PNG encoding releases the GIL: write one batch while the next renders (at most two batches in memory)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            res = render_standin_batch(layer, sample_standin_params(coeffs, b, cfg, rng), rendered, camera,
                                       image_size, cfg, rng, mismatch, mismatch_amount)
            joints[:, start:start + b] = np.stack(res["joints36"])
            fits[:, start:start + b] = np.stack(res["fits"])
            for job in pending:
                job.result()  # re-raise write errors
            pending = [pool.submit(_write_png, split_dir / depth_png_name(kind, v + 1, start + i),
                                   res[key][v][i])
                       for v in range(rendered) for i in range(b)
                       for kind, key in (("depth", "depth"), ("synthdepth", "synth"))]
        for job in pending:
            job.result()
    if rendered < views:  # views 2..: hard links (or copies) of view 1
        for v in range(2, views + 1):
            for kind in ("depth", "synthdepth"):
                for i in range(n):
                    _link(split_dir / depth_png_name(kind, 1, i), split_dir / depth_png_name(kind, v, i))
        joints = np.repeat(joints[:1], views, 0)
        fits = np.repeat(fits[:1], views, 0)
    write_joint_data(split_dir / "joint_data.mat", xyz_to_uvd(joints, camera), flip_y(joints))
    split = split_dir.name
    for v in range(views):
        write_nyu_fits(split_dir.parent, split, v, fits[v])
    for v in range(views):
        if v == 0 or rendered > 1:
            centres = joints[v][:, list(NYU_EVAL_14)].mean(1) + rng.normal(0.0, cfg.center_noise, (n, 3))
        write_centers(split_dir / f"center_{split}_{v}_refined.txt", centres)  # DSF per-view: y down
        if v == 0:
            write_centers(split_dir / f"center_{split}_refined.txt", flip_y(centres))  # V2V / AWR: y up


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def generate_standin_nyu(out_dir, n_train: int, n_test: int, seed: int = 0, mano_path: str | None = None,
                         views: int = 3, view_mode: str = "render", batch_size: int = 32,
                         config: StandinConfig = StandinConfig(), mismatch: str = "none",
                         mismatch_amount: float | None = None) -> Path:
    """Write the stand-in NYU tree (see the module docstring); deterministic for ``seed``. Returns
    ``out_dir``.

    Args:
        out_dir: tree root (created; existing files of the same names are overwritten).
        n_train, n_test: frames per split (per view).
        seed: every random draw derives from it.
        mano_path: MANO-format model to render (default: the procedural stand-in of :mod:`render.standin`).
        views: 1..3 Kinect views to write.
        view_mode: 'render' (views 2/3 from other camera poses, see the module docstring) or 'copy' (views 2/3
        are
            hard links of view 1 with the same labels: a third of the generation time).
        batch_size: frames rendered together.
        config: the scene distribution (:class:`StandinConfig`).
        mismatch, mismatch_amount: surface change of the rendered hands (:func:`apply_mismatch`; 'none',
            'thick', 'smooth'; amount None = the option's default).
    """
    if mismatch not in MISMATCHES:
        raise ValueError(f"mismatch must be one of {MISMATCHES}, got {mismatch!r}")
    if not 1 <= views <= len(VIEW_TILTS):
        raise ValueError(f"views must be 1..{len(VIEW_TILTS)}, got {views}")
    if view_mode not in VIEW_MODES:
        raise ValueError(f"view_mode must be one of {VIEW_MODES}, got {view_mode!r}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"need at least one frame per split, got train={n_train}, test={n_test}")
    out = Path(out_dir)
    model = load_model(mano_path)
    layer = ManoLayer(model)
    camera, image_size = NYU_CAMERA.as_tuple(), (NYU_CAMERA.height, NYU_CAMERA.width)
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        _write_split(out / split, layer, model.hands_coeffs, n, views, seed * 2 + k, config, batch_size,
                     camera, image_size, view_mode, mismatch, mismatch_amount)
    info = _info(n_train, n_test, seed, mano_path, views, view_mode, config, mismatch, mismatch_amount)
    (out / INFO_FILE).write_text(json.dumps(info, indent=1))
    return out


def _info(n_train, n_test, seed, mano_path, views, view_mode, config, mismatch="none",
          mismatch_amount=None) -> dict:
    info = {"n_train": n_train, "n_test": n_test, "seed": seed, "mano_path": mano_path or "standin",
            "views": views, "view_mode": view_mode, "config": json.loads(json.dumps(asdict(config)))}
    if mismatch != "none":  # recorded only when used: trees made before the option stay valid caches
        info["mismatch"] = {"kind": mismatch, "amount": mismatch_amount}
    return info


def ensure_standin_nyu(out_dir, n_train: int, n_test: int, seed: int = 0, mano_path: str | None = None,
                       views: int = 3, view_mode: str = "render",
                       config: StandinConfig = StandinConfig(), mismatch: str = "none",
                       mismatch_amount: float | None = None) -> Path:
    """Generate the tree unless ``out_dir`` holds one made with these exact settings (demo's first use).
    Trees written before the released-format fits existed are regenerated once."""
    from dataloader.standin_frames import made_with  # (standin_frames imports this module)

    want = _info(n_train, n_test, seed, mano_path, views, view_mode, config, mismatch, mismatch_amount)
    fits_there = (Path(out_dir) / FITS_DIR / "nyu-test-0-trans.txt").is_file()
    if fits_there and made_with(out_dir, INFO_FILE, want):
        return Path(out_dir)
    return generate_standin_nyu(out_dir, n_train, n_test, seed, mano_path, views, view_mode, config=config,
                                mismatch=mismatch, mismatch_amount=mismatch_amount)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write an NYU-format stand-in tree rendered from a MANO-format "
                                             "model.")
    ap.add_argument("--out", required=True, help="tree root to write")
    ap.add_argument("--train", type=int, default=256, help="training frames per view")
    ap.add_argument("--test", type=int, default=64, help="test frames per view")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mano", default=None, help="MANO-format model (default: the procedural stand-in)")
    ap.add_argument("--views", type=int, default=3, help="Kinect views to write (1..3)")
    ap.add_argument("--view-mode", default="render", choices=VIEW_MODES,
                    help="views 2/3 rendered from other camera poses, or hard links of view 1")
    ap.add_argument("--mismatch", default="none", choices=MISMATCHES,
                    help="render the hands with a surface MANO cannot represent (labels stay MANO's)")
    ap.add_argument("--mismatch-amount", type=float, default=None,
                    help="thick: offset at the fingertips in mm (default 3); smooth: step in (0, 1] "
                         "(default 0.5)")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = generate_standin_nyu(args.out, args.train, args.test, args.seed, args.mano, args.views,
                               args.view_mode, mismatch=args.mismatch, mismatch_amount=args.mismatch_amount)
    print(f"wrote {out} ({args.train} train + {args.test} test frames x {args.views} views) "
          f"in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
