"""Procedural MANO-format stand-in hand: asset generation for the demo, the tests and the benchmarks, not runtime
code. It writes a right hand in the MANO v1.2 pickle container (or a chumpy-free .npz) that goes through the same
restricted reader as the licensed ``MANO_RIGHT.pkl`` but contains no MANO data.

``python -m render.standin --out PATH [--npz]`` writes it (:mod:`render.standin.__main__`).

Modules:
    model        assembles the model (:func:`build_standin`), writes / reads it back (:func:`write_standin`,
                 :func:`load_standin`), the command line (:func:`main`)
    geometry     tuned dimensions and the vertex rings of palm, fingers and thumb
    mesh         triangulation into one disk, orientation, renumbering to MANO's reserved vertex ids
    rig          skinning weights, joint regressor, shape blend shapes
    pose         pose prior and its PCA (``hands_components``, ``hands_coeffs``)
    mano_pickle  writer of the MANO v1.2 pickle container (chumpy-compatible objects)
"""
from render.standin.geometry import (  # noqa: F401  (the stand-in's dimensions, re-exported)
    BLEND, CAP_ANGLES_DEG, FINGERS, JOINT_HALF_GAP, MAX_GAP, MM, PALM_IDS, PALM_N, PALM_ROWS, PALM_TAIL,
    RING_N, THUMB_DIR, THUMB_LENGTHS, THUMB_MAX_GAP, THUMB_MCP, THUMB_N, THUMB_TIPS, WINDOW_COLS,
    WINDOW_ROWS, WRIST_N, WRIST_X,
)
from render.standin.model import (
    KEY_ORDER, build_standin, load_standin, main, standin_bytes, write_standin, write_standin_npz,
)
from render.standin.pose import NUM_POSES

__all__ = ["KEY_ORDER", "NUM_POSES", "build_standin", "load_standin", "main", "standin_bytes", "write_standin",
           "write_standin_npz"]
