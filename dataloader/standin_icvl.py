"""Generate an ICVL-format stand-in tree (tests and ``demo=true dataset=icvl``).

``python -m dataloader.standin_icvl --out DIR --train N --test M [--seed S] [--mano PATH]``

Writes the layout :mod:`dataloader.icvl` reads, in ICVL's own conventions:

- ``Depth/<seq>/image_NNNN.png``: 320 x 240 single-channel 16-bit depth (mm; 32001 = no value) of a
  **left** hand: the stand-in MANO (right) hand is rendered with the principal point at ``W - 1 - cx`` and the
  image flipped, which is exactly the mirrored scene (x -> -x) seen by the ICVL camera; labels are the
  mirrored joints projected with that camera. The DSF loader's mirror turns it back into a right hand;
- ``train.txt``: the original training sequences (folders with 12-digit names) plus in-plane rotated copies
  (folder ``<angle>/<seq>``, image and labels rotated about the image centre) that DSF leaves out;
- ``test_seq_1.txt`` / ``test_seq_2.txt`` (CRLF line ends, like the public files) with ``test_seq_{1,2}/``
  images, split as ICVL's 702 : 894;
- ``center_{train,test}_refined.txt``: label centroid + N(0, 12^2) mm per axis (y down, original image),
  with one ``invalid`` line in train;
- ``icvl_test_groundtruth_label.txt`` / ``icvl_test_list.txt``: the community evaluator's files for this test
  set; ``fits_{train,test}.txt``: the 62 DSF parameters of each hand in the loader's (mirrored) frame.

Labels: ICVL's 16 joints from the 21 MANO joints (``util.joints.MANO_TO_ICVL``; Palm = MANO wrist, as DSF).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from dataloader.depth_io import write_centers
from dataloader.icvl import LABEL_FILES, write_icvl_depth, write_icvl_labels
from dataloader.standin_frames import NEAR_RANGE_CONFIG, made_with, render_frames, standin_layer
from dataloader.standin_nyu import StandinConfig
from util.camera import ICVL_CAMERA
from util.geometry import uvd_to_xyz, xyz_to_uvd
from util.joints import ICVL_TEST_SEQ_FRAMES, MANO_TO_ICVL

INFO_FILE = "standin_icvl.json"
TRAIN_SEQUENCES = ("201403121135", "201403121140", "201405151126")
ROTATIONS = (-30.0, 45.0)  # in-plane rotated copies of the first training frames (left out by DSF)


def _mirrored_render_camera() -> tuple[float, float, float, float]:
    """Camera whose flipped image is the ICVL camera's image of the mirrored scene: pixel j of the flipped
    image is pixel W - 1 - j of the render, whose ray x / z = (W - 1 - j - cx') / fx equals -(j - cx) / fx for
    cx' = W - 1 - cx."""
    fx, fy, cx, cy = ICVL_CAMERA.as_tuple()
    return (fx, fy, ICVL_CAMERA.width - 1 - cx, cy)


def _mirror_x(xyz: np.ndarray) -> np.ndarray:
    out = np.array(xyz, np.float64, copy=True)
    out[..., 0] *= -1.0
    return out


def _rotation(shape: tuple[int, int], angle: float) -> np.ndarray:
    """(2, 3) in-plane rotation of image points about the image centre by ``angle`` degrees."""
    h, w = shape
    return cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)


def _rotate_uvd(uvd: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(..., 3) (u, v, d) with (u, v) rotated by the (2, 3) matrix R; d unchanged."""
    uv = uvd[..., :2] @ R[:, :2].T + R[:, 2]
    return np.concatenate([uv, uvd[..., 2:]], -1)


def _rotate_frame(depth: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Nearest-neighbour rotation of a depth frame (0 where nothing maps)."""
    h, w = depth.shape
    return cv2.warpAffine(depth.astype(np.float32), R, (w, h), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _frames(n: int, seed: int, mano_path, cfg: StandinConfig) -> dict:
    layer, coeffs = standin_layer(mano_path)
    rng = np.random.default_rng(seed)
    res = render_frames(layer, coeffs, n, _mirrored_render_camera(), (ICVL_CAMERA.height, ICVL_CAMERA.width),
                        cfg, rng)
    joints_left = _mirror_x(res["mano21"][:, list(MANO_TO_ICVL)])  # (n, 16, 3) the file's (left) frame
    centres = joints_left.mean(1) + rng.normal(0.0, cfg.center_noise, (n, 3))
    return {"depth": res["depth"][:, :, ::-1], "uvd": xyz_to_uvd(joints_left, ICVL_CAMERA.as_tuple()),
            "centres": centres, "fits": res["fits"]}


def generate_standin_icvl(out_dir, n_train: int, n_test: int, seed: int = 0, mano_path: str | None = None,
                          config: StandinConfig = NEAR_RANGE_CONFIG) -> Path:
    """Write the stand-in ICVL tree (module docstring); deterministic for ``seed``. Returns ``out_dir``.

    ``n_train`` original training frames (spread over ``TRAIN_SEQUENCES``) and ``n_test`` >= 2 test frames
    (split 702 : 894 between the two sequences).
    """
    if n_train < 2 or n_test < 2:
        raise ValueError(f"need >= 2 frames per split, got train={n_train}, test={n_test}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cam = ICVL_CAMERA.as_tuple()
    # train: originals, then rotated copies of the first frames (their folders are short: DSF skips them)
    tr = _frames(n_train, 2 * seed, mano_path, config)
    names, uvd, centres, depth = [], [], [], []
    for i in range(n_train):
        seq = TRAIN_SEQUENCES[i * len(TRAIN_SEQUENCES) // n_train]
        names.append(f"{seq}/image_{i:04d}.png")
        uvd.append(tr["uvd"][i]), centres.append(tr["centres"][i]), depth.append(tr["depth"][i])
    for k, angle in enumerate(ROTATIONS):
        i = k % n_train
        R = _rotation(tr["depth"][i].shape, angle)
        names.append(f"{angle:g}/{names[i]}")
        uvd.append(_rotate_uvd(tr["uvd"][i], R))
        depth.append(_rotate_frame(tr["depth"][i], R))
        centres.append(uvd_to_xyz(_rotate_uvd(xyz_to_uvd(tr["centres"][i], cam), R), cam))
    centres = np.asarray(centres)
    centres[n_train - 1] = np.nan  # one 'invalid' centre line, as the real files have
    for name, d in zip(names, depth):
        write_icvl_depth(out / "Depth" / name, d)
    write_icvl_labels(out / LABEL_FILES["train"][0], names, np.asarray(uvd))
    write_centers(out / "center_train_refined.txt", centres)
    np.savetxt(out / "fits_train.txt", tr["fits"], fmt="%.6f")

    te = _frames(n_test, 2 * seed + 1, mano_path, config)
    n1 = max(1, min(n_test - 1, round(n_test * ICVL_TEST_SEQ_FRAMES[0] / sum(ICVL_TEST_SEQ_FRAMES))))
    test_names = [f"test_seq_1/image_{i:04d}.png" for i in range(n1)] + \
                 [f"test_seq_2/image_{i:04d}.png" for i in range(n_test - n1)]
    for name, d in zip(test_names, te["depth"]):
        write_icvl_depth(out / "Depth" / name, d)
    for fname, sl in zip(LABEL_FILES["test"], (slice(0, n1), slice(n1, n_test))):
        write_icvl_labels(out / fname, test_names[sl], te["uvd"][sl], crlf=True)
    write_centers(out / "center_test_refined.txt", te["centres"])
    np.savetxt(out / "fits_test.txt", te["fits"], fmt="%.6f")
    np.savetxt(out / "icvl_test_groundtruth_label.txt", te["uvd"].reshape(n_test, -1), fmt="%.3f")
    (out / "icvl_test_list.txt").write_text("".join(n + "\n" for n in test_names))
    (out / INFO_FILE).write_text(json.dumps(_info(n_train, n_test, seed, mano_path), indent=1))
    return out


def _info(n_train, n_test, seed, mano_path) -> dict:
    return {"n_train": n_train, "n_test": n_test, "seed": seed, "mano_path": mano_path or "standin"}


def ensure_standin_icvl(out_dir, n_train: int, n_test: int, seed: int = 0, mano_path: str | None = None) -> Path:
    """Generate the tree unless ``out_dir`` holds one made with these exact settings (the demo's first use)."""
    if made_with(out_dir, INFO_FILE, _info(n_train, n_test, seed, mano_path)):
        return Path(out_dir)
    return generate_standin_icvl(out_dir, n_train, n_test, seed, mano_path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write an ICVL-format stand-in tree rendered from a MANO-format "
                                             "model.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--test", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mano", default=None, help="MANO-format model (default: the procedural stand-in)")
    args = ap.parse_args(argv)
    t0 = time.time()
    generate_standin_icvl(args.out, args.train, args.test, args.seed, args.mano)
    print(f"wrote {args.out} ({args.train} train + {args.test} test frames) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
