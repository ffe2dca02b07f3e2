"""Generate an MSRA-format stand-in tree (tests and ``demo=true dataset=msra``).

``python -m dataloader.standin_msra --out DIR --frames K [--gestures 1 2 ...] [--seed S] [--mano PATH]``

Writes the layout :mod:`dataloader.msra` reads, in MSRA's own conventions, for subjects P0..P8 and the given
gestures (default all 17), ``K`` frames per folder:

- ``P<k>/<gesture>/<NNNNNN>_depth.bin``: the segmented hand (the stand-in MANO hand through the sensor model,
  forearm and background removed as in MSRA's pre-segmented frames) inside its tight bounding box,
  6 int32 header + float32 depth;
- ``P<k>/<gesture>/joint.txt``: frame count, then the 21 MSRA joints per line (mm, **y up, z negative**);
- ``center_{train,test}_<k>_refined.txt`` for every fold k: label centroid + N(0, 12^2) mm per axis, y up,
  z positive (DSF's reading: y flipped), the same noisy centre for a frame in every fold;
- ``msra_test_list.txt`` / ``msra_test_groundtruth_label.txt`` / ``msra_angle.txt``: the community evaluator's
  list and ground truth (u, v, d) for all subjects in order, and the (yaw, pitch) of each frame (REN's formula,
  :func:`util.evaluate.msra_viewpoint_angles`);
  ``fits.txt``: the 62 DSF parameters of every frame (camera frame, y down), in the same order.

Hand sizes follow the subjects' cubes (scale x cube / 200), so the per-subject cubes fit as on the real data.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dataloader.depth_io import write_centers
from dataloader.msra import (center_file_name, frame_name, internal_to_msra_file, write_joint_txt,
                             write_msra_bin)
from dataloader.standin_frames import NEAR_RANGE_CONFIG, made_with, render_frames, scaled, standin_layer
from dataloader.standin_nyu import StandinConfig
from util.camera import MSRA_CAMERA, MSRA_SUBJECT_CUBES
from util.geometry import xyz_to_uvd
from util.evaluate import msra_viewpoint_angles
from util.joints import MANO_TO_MSRA, MSRA_GESTURES, MSRA_SUBJECTS

INFO_FILE = "standin_msra.json"


def generate_standin_msra(out_dir, frames_per_gesture: int, gestures=MSRA_GESTURES, seed: int = 0,
                          mano_path: str | None = None, config: StandinConfig = NEAR_RANGE_CONFIG) -> Path:
    """Write the stand-in MSRA tree (module docstring); deterministic for ``seed``. Returns ``out_dir``."""
    if frames_per_gesture < 1 or not gestures:
        raise ValueError("need >= 1 frame per gesture folder and >= 1 gesture")
    unknown = [g for g in gestures if g not in MSRA_GESTURES]
    if unknown:
        raise ValueError(f"unknown MSRA gestures {unknown}; valid: {MSRA_GESTURES}")
    out = Path(out_dir)
    layer, coeffs = standin_layer(mano_path)
    rng = np.random.default_rng(seed)
    cam = MSRA_CAMERA.as_tuple()
    k = frames_per_gesture
    joints_all, centres_all, subj_all, names, fits = [], [], [], [], []
    for s in range(MSRA_SUBJECTS):
        cfg = scaled(config, MSRA_SUBJECT_CUBES[s] / 200.0)
        res = render_frames(layer, coeffs, k * len(gestures), cam, (MSRA_CAMERA.height, MSRA_CAMERA.width), cfg,
                            rng)
        # MSRA frames hold the segmented hand only: sensor depth where the clean render shows the hand
        hand = np.where((res["synth"] > 0) & (res["depth"] < cfg.sensor.invalid), res["depth"], 0.0)
        joints = res["mano21"][:, list(MANO_TO_MSRA)]  # (n, 21, 3) internal frame
        for gi, g in enumerate(gestures):
            folder = out / f"P{s}" / g
            folder.mkdir(parents=True, exist_ok=True)
            sl = slice(gi * k, (gi + 1) * k)
            write_joint_txt(folder / "joint.txt", internal_to_msra_file(joints[sl]))
            for i in range(k):
                write_msra_bin(folder / frame_name(i), hand[gi * k + i])
                names.append(f"P{s}/{g}/{frame_name(i)}")
        joints_all.append(joints)
        centres_all.append(joints.mean(1) + rng.normal(0.0, config.center_noise, (len(joints), 3)))
        subj_all.append(np.full(len(joints), s))
        fits.append(res["fits"])
    joints_all, subj_all = np.concatenate(joints_all), np.concatenate(subj_all)
    centres_up = np.concatenate(centres_all) * np.array([1.0, -1.0, 1.0])  # DSF centre files: y up
    for t in range(MSRA_SUBJECTS):
        write_centers(out / center_file_name("test", t), centres_up[subj_all == t])
        write_centers(out / center_file_name("train", t), centres_up[subj_all != t])
    n = len(joints_all)
    (out / "msra_test_list.txt").write_text("".join(nm + "\n" for nm in names))
    np.savetxt(out / "msra_test_groundtruth_label.txt", xyz_to_uvd(joints_all, cam).reshape(n, -1), fmt="%.3f")
    np.savetxt(out / "msra_angle.txt", msra_viewpoint_angles(xyz_to_uvd(joints_all, cam)), fmt="%.3f")
    np.savetxt(out / "fits.txt", np.concatenate(fits), fmt="%.6f")
    (out / INFO_FILE).write_text(json.dumps(_info(frames_per_gesture, gestures, seed, mano_path), indent=1))
    return out


def _info(frames_per_gesture, gestures, seed, mano_path) -> dict:
    return {"frames_per_gesture": frames_per_gesture, "gestures": list(gestures), "seed": seed,
            "mano_path": mano_path or "standin"}


def ensure_standin_msra(out_dir, frames_per_gesture: int, gestures=MSRA_GESTURES, seed: int = 0,
                        mano_path: str | None = None) -> Path:
    """Generate the tree unless ``out_dir`` holds one made with these exact settings (the demo's first use)."""
    if made_with(out_dir, INFO_FILE, _info(frames_per_gesture, gestures, seed, mano_path)):
        return Path(out_dir)
    return generate_standin_msra(out_dir, frames_per_gesture, gestures, seed, mano_path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write an MSRA-format stand-in tree rendered from a MANO-format "
                                             "model.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=4, help="frames per subject and gesture folder")
    ap.add_argument("--gestures", nargs="+", default=list(MSRA_GESTURES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mano", default=None, help="MANO-format model (default: the procedural stand-in)")
    args = ap.parse_args(argv)
    t0 = time.time()
    generate_standin_msra(args.out, args.frames, tuple(args.gestures), args.seed, args.mano)
    print(f"wrote {args.out} ({MSRA_SUBJECTS} subjects x {len(args.gestures)} gestures x {args.frames} frames) "
          f"in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
