"""Fixtures of the dataloader tests: a tiny NYU-format tree of analytic "ball hands" (independent of render/).

Each frame holds 14 spheres (radius ``BALL_R`` mm) centred on the 14 evaluation joints, ray-cast exactly, in
front of a far wall at 2001 mm (the real NYU missing/far value). A joint therefore projects onto a ball pixel
whose depth is the joint depth minus about ``BALL_R``: the reference every label check compares against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataloader.depth_io import write_centers, write_depth_png, write_joint_data
from util.camera import NYU_CAMERA
from util.geometry import flip_y
from util.joints import NYU_EVAL_14

CAM = NYU_CAMERA.as_tuple()
BALL_R = 14.0
FAR = 2001.0


def raycast_balls(centers: np.ndarray, radius: float, camera=CAM, shape=(480, 640),
                  background: float = FAR) -> np.ndarray:
    """Exact depth image (H, W) mm of spheres ``centers`` (K, 3) mm (y down) seen by a pinhole camera.

    For the pixel ray r = ((u - cx)/fx, (v - cy)/fy, 1) the surface point is z r with
    z^2 |r|^2 - 2 z (r.c) + |c|^2 - R^2 = 0; the nearer root is the visible depth.
    """
    fx, fy, cx, cy = camera
    v, u = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    r = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
    rr = (r * r).sum(-1)
    depth = np.full(shape, np.inf)
    for c in centers:
        rc = r @ c
        disc = rc * rc - rr * (c @ c - radius * radius)
        hit = disc >= 0
        z = np.where(hit, (rc - np.sqrt(np.where(hit, disc, 0.0))) / rr, np.inf)
        depth = np.minimum(depth, z)
    return np.where(np.isfinite(depth), depth, background)


def random_ball_joints(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 36, 3) joints mm (y down): a palm centre at 550-900 mm and the 14 eval joints around it.

    The joints sit on a jittered 5 x 3 grid (45 mm pitch, +-5 mm jitter, +-25 mm depth), so no ball hides
    another.
    """
    grid = np.array([(x, y) for y in (-45.0, 0.0, 45.0) for x in (-90.0, -45.0, 0.0, 45.0, 90.0)])
    out = np.zeros((n, 36, 3))
    for i in range(n):
        c = np.array([rng.uniform(-120, 120), rng.uniform(-80, 80), rng.uniform(550, 900)])
        cells = grid[rng.permutation(len(grid))[:14]] + rng.uniform(-5, 5, (14, 2))
        offs = np.concatenate([cells, rng.uniform(-25, 25, (14, 1))], 1)
        out[i, :] = c
        out[i, list(NYU_EVAL_14)] = c + offs
    return out


def write_ball_tree(root: Path, n_train: int = 6, n_test: int = 5, seed: int = 0, views: int = 1,
                    center_noise: float = 8.0) -> dict:
    """Write an NYU-format tree of ball hands; returns the y-down joints per split {'train': (N, 36, 3)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        joints = random_ball_joints(rng, n)  # y down
        xyz_up = np.repeat(flip_y(joints)[None], views, 0)
        uvd = np.stack([CAM[2] + CAM[0] * xyz_up[..., 0] / xyz_up[..., 2],
                        CAM[3] - CAM[1] * xyz_up[..., 1] / xyz_up[..., 2], xyz_up[..., 2]], -1)
        write_joint_data(d / "joint_data.mat", uvd, xyz_up)
        for i in range(n):
            depth = raycast_balls(joints[i, list(NYU_EVAL_14)], BALL_R)
            for v in range(1, views + 1):
                write_depth_png(d / f"depth_{v}_{i + 1:07d}.png", depth)
        centers = joints[:, list(NYU_EVAL_14)].mean(1) + rng.normal(0, center_noise, (n, 3))
        for v in range(views):
            write_centers(d / f"center_{split}_{v}_refined.txt", centers)  # DSF per-view: y down
        write_centers(d / f"center_{split}_refined.txt", flip_y(centers))  # V2V/AWR: y up
        out[split] = joints
    return out


@pytest.fixture(scope="module")
def ball_tree(tmp_path_factory):
    """(root, joints) of a small ball-hand NYU tree shared by a test module (read-only use)."""
    root = tmp_path_factory.mktemp("balls")
    return root, write_ball_tree(root)
