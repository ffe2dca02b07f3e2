"""Independent reference implementations shared by tests and benchmarks (import as ``tests.reference``).

Each function re-derives a computation of the library from its definition (docs/method.md) or from the official
DSF code, written out literally in float64 numpy (or, for the official loader, in the official code's own float32
arithmetic) and without calling the code under test. Benchmarks time the library against these; tests compare
against them.

- :func:`rodrigues_np`, :func:`numpy_mano`: float64 MANO forward (LBS with the DSF joint convention).
- :func:`literal_crop_box`, :func:`literal_crop_matrix`: the DeepPrior++ crop box and matrix M (docs/method.md
  §2.4), float64, independent of ``util.geometry``.
- :func:`literal_crop`: the DeepPrior++ crop and normalisation of docs/method.md §3, float64, both samplings.
- :func:`official_nyu_test_crop`: the official NYU loader's test-time crop (``Crop_Image_deep_pp`` +
  ``normalize_img`` of ``data/render_loader.py``), statement by statement, in float32 as the official
  environment (numpy < 1.24, value-based casting) computed it.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

#: DSF's fingertip vertices: index, middle, pinky, ring, thumb (joints 16..20)
FINGERTIPS = (333, 444, 672, 555, 744)


# --------------------------------------------------------------------------------------------------
# MANO
# --------------------------------------------------------------------------------------------------
def rodrigues_np(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) by the closed form R = I + sin(t) K + (1 - cos(t)) K^2."""
    angle = np.linalg.norm(axis_angle, axis=-1)[..., None, None]
    safe = np.where(angle > 0, angle, 1.0)
    k = axis_angle / safe[..., 0]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    skew = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(k.shape[:-1] + (3, 3))
    eye = np.broadcast_to(np.eye(3), skew.shape)
    return eye + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def numpy_mano(model, full_pose: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 MANO: full_pose (B, 48), betas (B, 10) -> vertices (B, 778, 3), joints (B, 21, 3), metres.

    ``model``: a ``render.mano_io.ManoModel`` (only its arrays are read). Joints = 16 regressed from the posed
    mesh + the 5 fingertip vertices (DSF convention).
    """
    batch = full_pose.shape[0]
    rot = rodrigues_np(full_pose.reshape(batch, 16, 3))
    v_shaped = model.v_template + np.einsum("vck,bk->bvc", model.shapedirs, betas)
    rest = np.einsum("jv,bvc->bjc", model.J_regressor, v_shaped)
    lrotmin = (rot[:, 1:] - np.eye(3)).reshape(batch, 135)
    v_posed = v_shaped + np.einsum("vcp,bp->bvc", model.posedirs, lrotmin)
    world = np.zeros((batch, 16, 4, 4))
    for k, parent in enumerate(model.parents):
        local = np.zeros((batch, 4, 4))
        local[:, :3, :3] = rot[:, k]
        local[:, :3, 3] = rest[:, k] - (rest[:, parent] if parent >= 0 else 0.0)
        local[:, 3, 3] = 1.0
        world[:, k] = local if parent < 0 else world[:, parent] @ local
    rel = world.copy()
    rel[:, :, :3, 3] -= np.einsum("bjmn,bjn->bjm", world[:, :, :3, :3], rest)
    skin = np.einsum("vj,bjmn->bvmn", model.weights, rel)
    verts = np.einsum("bvmn,bvn->bvm", skin[..., :3, :3], v_posed) + skin[..., :3, 3]
    regressed = np.einsum("jv,bvc->bjc", model.J_regressor, verts)
    joints = np.concatenate([regressed, verts[:, list(FINGERTIPS)]], axis=1)
    return verts, joints


# --------------------------------------------------------------------------------------------------
# crops
# --------------------------------------------------------------------------------------------------
def literal_crop_box(center_xyz, cube, camera, size: int = 128) -> dict:
    """The DeepPrior++ crop box of docs/method.md §2.4, float64 and Python integers, written out literally.

    Returns a dict with the frame box ``x0, x1, y0, y1``, the depth planes ``near, far``, the scale ``s``, the
    resized size ``width, height``, the paste offset ``ox, oy`` and
    ``M`` (3, 3) = T(ox, oy) diag(s, s, 1) T(-x0, -y0).
    """
    fx, fy, cx, cy = camera
    x, y, z = (float(c) for c in center_xyz)
    u_c, v_c, d_c = cx + fx * x / z, cy + fy * y / z, z
    sx, sy, sz = (float(c) for c in cube)
    x0, x1 = math.floor(u_c - sx / 2 * fx / d_c + 0.5), math.floor(u_c + sx / 2 * fx / d_c + 0.5)
    y0, y1 = math.floor(v_c - sy / 2 * fy / d_c + 0.5), math.floor(v_c + sy / 2 * fy / d_c + 0.5)
    w, h = x1 - x0, y1 - y0
    if w > h:
        s, width, height = size / w, size, math.floor(h * size / w)
    else:
        s, width, height = size / h, math.floor(w * size / h), size
    ox, oy = math.floor(size / 2 - width / 2), math.floor(size / 2 - height / 2)
    M = (np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], np.float64) @ np.diag([s, s, 1.0])
         @ np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64))
    return {"x0": x0, "x1": x1, "y0": y0, "y1": y1, "near": d_c - sz / 2, "far": d_c + sz / 2, "s": s,
            "width": width, "height": height, "ox": ox, "oy": oy, "M": M}


def literal_crop_matrix(center_xyz, cube, camera, size: int = 128) -> np.ndarray:
    """M (3, 3) float64 of :func:`literal_crop_box`; ``center_xyz`` / ``cube`` may be (B, 3) -> (B, 3, 3)."""
    c, s = np.asarray(center_xyz, np.float64), np.asarray(cube, np.float64)
    if c.ndim == 2:
        return np.stack([literal_crop_box(c[b], s[b], camera, size)["M"] for b in range(len(c))])
    return literal_crop_box(c, s, camera, size)["M"]


def literal_crop(depth: np.ndarray, center_xyz, cube, camera, size: int = 128, sampling: str = "resize"):
    """docs/method.md §3 followed literally, float64, for one frame (independent of util.geometry).

    ``resize``: the official cv2.resize nearest; ``warp``: crop pixel (i, j) takes the frame pixel nearest to
    M^-1 (j, i), computed here pixel by pixel with Python rounding of the exact inverse map.
    Returns (normalised crop (size, size) float64, M (3, 3), premax, (x0, y0)).
    """
    box = literal_crop_box(center_xyz, cube, camera, size)
    x0, x1, y0, y1, near, far = (box[k] for k in ("x0", "x1", "y0", "y1", "near", "far"))
    s, width, height, ox, oy = (box[k] for k in ("s", "width", "height", "ox", "oy"))
    d_c, sz = float(center_xyz[2]), float(cube[2])
    patch = np.zeros((y1 - y0, x1 - x0))  # zero padding outside the image
    for i in range(y1 - y0):
        for j in range(x1 - x0):
            if 0 <= y0 + i < depth.shape[0] and 0 <= x0 + j < depth.shape[1]:
                patch[i, j] = depth[y0 + i, x0 + j]
    patch[(patch > 0) & (patch < near)] = near
    patch[patch > far] = 0.0
    w, h = x1 - x0, y1 - y0
    if sampling == "resize":
        resized = cv2.resize(patch.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    else:
        resized = np.zeros((height, width))
        for i in range(height):
            for j in range(width):
                pi, pj = math.floor(i / s + 0.5), math.floor(j / s + 0.5)  # M^-1 (j + ox, i + oy) - (x0, y0)
                resized[i, j] = patch[min(pi, h - 1), min(pj, w - 1)]
    crop = np.zeros((size, size))
    crop[oy:oy + height, ox:ox + width] = resized
    premax = crop.max()
    crop[(crop == premax) | (crop == 0)] = far
    norm = (np.clip(crop, near, far) - d_c) / (sz / 2)
    return norm, box["M"], premax, (x0, y0)


def official_nyu_read(png_path) -> np.ndarray:
    """The official ``nyu_reader``: ``img[:, :, 0] + img[:, :, 1] * 256`` of the BGR image as float32 (old numpy
    promoted the uint8 product to uint16; the widening is written out here)."""
    img = cv2.imread(str(png_path))
    return np.asarray(img[:, :, 0] + img[:, :, 1].astype(np.uint16) * 256, dtype=np.float32)


def official_nyu_test_crop(depth: np.ndarray, center_xyz, cube, camera, size: int = 128):
    """The official NYU loader's test-time crop of one frame, statement by statement.

    ``nyu_loader.__getitem__`` without augmentation: ``center_uvd = joint3DToImg(center_xyz)``,
    ``Crop_Image_deep_pp`` (``comToBounds``, ``getCrop``, cv2.resize nearest, paste in the middle) and
    ``normalize_img(depth_crop.max(), depth_crop, center_xyz, cube)``. The official environment (numpy < 1.24)
    applied value-based casting: a float64 scalar combined with a float32 array is first rounded to float32,
    which is written out with ``np.float32(...)``. Returns (crop (size, size) float32, M (3, 3) float64).
    """
    fx, fy, fu, fv = camera
    center_xyz = np.asarray(center_xyz, np.float64)
    com = np.array([center_xyz[0] * fx / (center_xyz[2] + 1e-8) + fu, center_xyz[1] * fy / center_xyz[2] + fv,
                    center_xyz[2]])
    # comToBounds
    zstart = com[2] - cube[2] / 2.
    zend = com[2] + cube[2] / 2.
    xstart = int(np.floor((com[0] * com[2] / fx - cube[0] / 2.) / com[2] * fx + 0.5))
    xend = int(np.floor((com[0] * com[2] / fx + cube[0] / 2.) / com[2] * fx + 0.5))
    ystart = int(np.floor((com[1] * com[2] / fy - cube[1] / 2.) / com[2] * fy + 0.5))
    yend = int(np.floor((com[1] * com[2] / fy + cube[1] / 2.) / com[2] * fy + 0.5))
    # getCrop
    cropped = depth[max(ystart, 0):min(yend, depth.shape[0]), max(xstart, 0):min(xend, depth.shape[1])].copy()
    cropped = np.pad(cropped, ((abs(ystart) - max(ystart, 0), abs(yend) - min(yend, depth.shape[0])),
                               (abs(xstart) - max(xstart, 0), abs(xend) - min(xend, depth.shape[1]))),
                     mode="constant", constant_values=0)
    msk1 = np.logical_and(cropped < np.float32(zstart), cropped != 0)
    msk2 = np.logical_and(cropped > np.float32(zend), cropped != 0)
    cropped[msk1] = zstart
    cropped[msk2] = 0.
    # Crop_Image_deep_pp
    wb, hb = xend - xstart, yend - ystart
    sz = (size, int(hb * size / wb)) if wb > hb else (int(wb * size / hb), size)
    trans = np.eye(3)
    trans[0, 2], trans[1, 2] = -xstart, -ystart
    if cropped.shape[0] > cropped.shape[1]:
        scale = np.eye(3) * sz[1] / float(cropped.shape[0])
    else:
        scale = np.eye(3) * sz[0] / float(cropped.shape[1])
    scale[2, 2] = 1
    rz = cv2.resize(cropped, sz, interpolation=cv2.INTER_NEAREST)
    ret = np.ones((size, size), np.float32) * 0
    xs = int(np.floor(size / 2. - rz.shape[1] / 2.))
    ys = int(np.floor(size / 2. - rz.shape[0] / 2.))
    ret[ys:ys + rz.shape[0], xs:xs + rz.shape[1]] = rz
    off = np.eye(3)
    off[0, 2], off[1, 2] = xs, ys
    M = np.dot(off, np.dot(scale, trans))
    # normalize_img(premax, imgD, com = center_xyz, cube)
    img, premax = ret, ret.max()
    far, near, cz = (np.float32(center_xyz[2] + cube[2] / 2.), np.float32(center_xyz[2] - cube[2] / 2.),
                     np.float32(center_xyz[2]))
    img[img == premax] = far
    img[img == 0] = far
    img[img >= far] = far
    img[img <= near] = near
    img -= cz
    img /= np.float32(cube[2] / 2.)
    return img, M
