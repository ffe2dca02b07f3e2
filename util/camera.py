"""Per-dataset camera intrinsics and crop cubes — the one home of these constants.

Internal convention everywhere: camera frame in mm, +x right, +y **down**, +z forward;
u = cx + fx * x / z, v = cy + fy * y / z (OpenCV: the centre of pixel column j is u = j).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera of a full sensor image (pixels; ``width`` x ``height``)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def as_tuple(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy), the ``camera`` argument of the renderer and geometry helpers."""
        return (self.fx, self.fy, self.cx, self.cy)


#: Kinect 1 of NYU (the rounded values used by DSF, DeepPrior++, AWR and the community evaluator;
#: V2V uses 588.036865 / 587.075073).
NYU_CAMERA = Intrinsics(588.03, 587.07, 320.0, 240.0, 640, 480)
ICVL_CAMERA = Intrinsics(240.99, 240.96, 160.0, 120.0, 320, 240)
MSRA_CAMERA = Intrinsics(241.42, 241.42, 160.0, 120.0, 320, 240)

CAMERAS: dict[str, Intrinsics] = {"nyu": NYU_CAMERA, "icvl": ICVL_CAMERA, "msra": MSRA_CAMERA}

#: crop cube edge (mm) per dataset (DSF config ``CUBE``)
CUBE_SIZES: dict[str, float] = {"nyu": 250.0, "icvl": 200.0, "msra": 200.0}

#: MSRA crop cube edge (mm) per subject P0..P8 (DSF ``msra_loader``; replaces the dataset default there)
MSRA_SUBJECT_CUBES: tuple[float, ...] = (200.0, 200.0, 200.0, 180.0, 180.0, 180.0, 170.0, 160.0, 150.0)

#: ICVL mirror: the official loader flips frames left-right and maps labels / centres with u' = W - u (not
#: W - 1 - u; docs/DEVIATIONS.md "Datasets ICVL/MSRA"), so that the left hand looks like MANO's right hand
ICVL_MIRROR_WIDTH = 320.0

#: range of hand distances (mm) for synthetic rendering per dataset (DSF ``Render``)
SYNTH_DEPTH_RANGES: dict[str, tuple[float, float]] = {
    "nyu": (500.0, 1200.0), "icvl": (150.0, 600.0), "msra": (150.0, 600.0)}

#: plausible hand-centre depth (mm) per dataset: centre files outside it are refused (a tiny z makes a huge
#: crop, z = 0 divides by zero). Generous: real NYU centres lie at 410-1105 mm, ICVL joints at 190-453 mm.
CENTER_DEPTH_RANGES: dict[str, tuple[float, float]] = {
    "nyu": (100.0, 5000.0), "icvl": (100.0, 5000.0), "msra": (100.0, 5000.0)}

#: value of missing / far depth in real NYU frames (no zeros occur there)
NYU_INVALID_DEPTH = 2001.0
