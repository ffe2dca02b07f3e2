"""Single-view stand-in frames for the ICVL / MSRA stand-in trees (tests and the demo).

The NYU stand-in machinery (:func:`dataloader.standin_nyu.render_standin_batch`: stand-in MANO hand, forearm,
optional wall, sensor model :mod:`dataloader.sensor`) rendered with another camera and scene distribution;
the labels are the 21 MANO joints, from which each data set takes its own joints.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from dataloader.sensor import SensorModel
from dataloader.standin_nyu import StandinConfig, load_model, render_standin_batch, sample_standin_params
from render.mano_layer import ManoLayer
from util.joints import NYU36_TO_MANO21

#: ICVL / MSRA-like scenes for a 320x240 camera at 241 px focal length: hands at 250-450 mm (ICVL labels:
#: 190-453 mm), near the image centre; "no value" = 32001 (DeepPrior++'s value for every data set)
NEAR_RANGE_CONFIG = StandinConfig(depth_range=(260.0, 440.0), u_range=(120.0, 200.0), v_range=(95.0, 150.0),
                                  arm_length=(120.0, 200.0), background_gap=(120.0, 500.0),
                                  sensor=SensorModel(invalid=32001.0))


def render_frames(layer: ManoLayer, coeffs: np.ndarray | None, n: int, camera, image_size, cfg: StandinConfig,
                  rng: np.random.Generator, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Render ``n`` single-view frames.

    Returns {'depth': (n, H, W) sensor depth mm (``cfg.sensor.invalid`` = no value), 'synth': (n, H, W) clean
    hand-only depth mm (0 = none), 'mano21': (n, 21, 3) MANO joints mm (camera frame, y down), 'fits':
    (n, 62) DSF parameters of each hand in the camera frame}.
    """
    parts: dict[str, list] = {"depth": [], "synth": [], "mano21": [], "fits": []}
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        res = render_standin_batch(layer, sample_standin_params(coeffs, b, cfg, rng), 1, camera, image_size,
                                   cfg, rng)
        parts["depth"].append(res["depth"][0])
        parts["synth"].append(res["synth"][0])
        parts["mano21"].append(res["joints36"][0][:, list(NYU36_TO_MANO21)])
        parts["fits"].append(res["fits"][0])
    return {k: np.concatenate(v) for k, v in parts.items()}


def standin_layer(mano_path: str | None = None) -> tuple[ManoLayer, np.ndarray | None]:
    """MANO layer of ``mano_path`` (default: the procedural stand-in) and its PCA pose coefficients."""
    model = load_model(mano_path)
    return ManoLayer(model), model.hands_coeffs


def scaled(cfg: StandinConfig, factor: float) -> StandinConfig:
    """``cfg`` with hand scales multiplied by ``factor`` (smaller / larger subjects)."""
    lo, hi = cfg.scale_range
    return replace(cfg, scale_range=(lo * factor, hi * factor))


def made_with(out_dir, info_file: str, want: dict) -> bool:
    """Whether ``out_dir`` holds a stand-in tree whose settings file ``info_file`` records exactly ``want``
    (the ``ensure_standin_*`` check; an unreadable file means no)."""
    info = Path(out_dir) / info_file
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text()) == want
    except json.JSONDecodeError:
        return False
