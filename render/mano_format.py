"""Sizes fixed by the MANO v1.2 file format (docs/formats.md §1.2) and the error for a file that breaks them.

Shared by the reader (``render.mano_io``, ``render.mano_unpickler``) and the stand-in writer
(``render.standin``, ``render.standin.mano_pickle``); ``render.mano_io`` re-exports every name.
"""
from __future__ import annotations

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_POSE_BASIS = 135  # 15 finger joints x 9 entries of (R - I)
NUM_HAND_POSE = 45  # 15 finger joints x 3 axis-angle values


class ManoFormatError(ValueError):
    """A MANO model file is not what docs/formats.md §1 describes (message names the file and the key)."""
