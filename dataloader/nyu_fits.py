"""NYU's released MANO fits in the official file format (docs/method.md §3, docs/formats.md §1.8).

Files: ``<root>/posePara_lm_collosion/nyu-{split}-{v}-{glb,pose,shape,scale,trans}.txt`` with ``<root>`` the
NYU tree (holding ``train/`` and ``test/``), ``v`` the 0-based Kinect view (like the per-view centre files),
whitespace text (``%.6f``), N rows of 3, 45, 10, 1, 3 numbers; concatenated in that order they are the 62-d
DSF vector ``[axis-angle 3 | pose PCA 45 | betas 10 | scale 1 | transl 3]``.

Frame: this project reads and writes them in its one camera frame (mm, y down), with g = 1 (no global
scale): ``ManoLayer.forward_dsf(fit)`` gives the hand in mm. The official code loads these files but never
uses them (docs/method.md §3); which frame the released files use is not documented (docs/DEVIATIONS.md
``## Benchmark``). Here they serve the benchmark's supervised upper bound (:func:`FitPointLabels`) and the
stand-in generator writes them with the exact parameters of every frame.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from dataloader.depth_io import DataFileError
from dataloader.synthetic import HANDS_FILE_PARTS, load_hands_params
from render.mano_layer import ManoLayer
from render.mano_params import PARAM_DIM, layout_for

FITS_DIR = "posePara_lm_collosion"
SPLITS = ("train", "test")
#: number of point labels per frame of :class:`FitPointLabels`: 21 joints then 779 vertices
NUM_FIT_JOINTS, NUM_FIT_VERTS = 21, 779


def fits_prefix(split: str, view: int) -> str:
    """``nyu-{split}-{view - 1}`` for the 1-based Kinect ``view``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if view not in (1, 2, 3):
        raise ValueError(f"view must be 1, 2 or 3 (Kinect view), got {view!r}")
    return f"nyu-{split}-{view - 1}"


def default_fits_dir(root) -> Path:
    """``<root>/posePara_lm_collosion`` of an NYU tree."""
    return Path(root) / FITS_DIR


def write_nyu_fits(root, split: str, view0: int, fits: np.ndarray) -> Path:
    """Write (N, 62) parameters of ``split`` / 0-based view ``view0`` into ``<root>/posePara_lm_collosion``
    (``np.savetxt`` ``%.6f``, the official release's format). Returns the folder."""
    fits = np.asarray(fits, np.float64)
    if fits.ndim != 2 or fits.shape[1] != PARAM_DIM:
        raise ValueError(f"fits must be (N, {PARAM_DIM}), got {fits.shape}")
    out = default_fits_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    lay = layout_for(PARAM_DIM)
    slices = dict(zip(HANDS_FILE_PARTS, (lay.global_orient, lay.pose_pca, lay.betas, lay.scale, lay.transl)))
    prefix = fits_prefix(split, view0 + 1)
    for name in HANDS_FILE_PARTS:
        np.savetxt(out / f"{prefix}-{name}.txt", fits[:, slices[name]], fmt="%.6f")
    return out


def load_nyu_fits(fits_dir, split: str, view: int = 1, num_frames: int | None = None) -> np.ndarray:
    """(N, 62) float32 fits of ``split`` and 1-based Kinect ``view`` from ``fits_dir``.

    Missing file: FileNotFoundError; malformed / inconsistent files, or N != ``num_frames`` (the split's
    frame count): DataFileError naming the file.
    """
    prefix = fits_prefix(split, view)
    fits = load_hands_params(fits_dir, prefix)
    if num_frames is not None and fits.shape[0] != num_frames:
        raise DataFileError(f"{Path(fits_dir) / (prefix + '-glb.txt')}: {fits.shape[0]} rows, but the {split} "
                            f"split has {num_frames} frames (one fit per frame expected)")
    return fits


class FitPointLabels:
    """Per-frame point labels from MANO fits: ``labels(frame)`` -> (800, 3) float64 mm (camera frame, y
    down): the 21 MANO joints (official order) then the 779 vertices of the closed mesh of MANO(fit).

    Computed on demand (CPU, one frame per call; the real train split has 72,757 frames), so it can serve as
    ``NYUDataset(point_labels=...)``: the points then go through the crop augmentation with the joints.
    """

    def __init__(self, fits: np.ndarray, mano_layer: ManoLayer, source: str = "fits"):
        fits = np.asarray(fits, np.float32)
        if fits.ndim != 2 or fits.shape[1] != PARAM_DIM:
            raise ValueError(f"fits must be (N, {PARAM_DIM}), got {fits.shape}")
        self.fits, self.source = torch.from_numpy(fits), source
        # a CPU copy: data-loader workers evaluate it, the caller's layer stays on its device
        on_cpu = all(b.device.type == "cpu" for b in mano_layer.buffers())
        self.layer = mano_layer if on_cpu else copy.deepcopy(mano_layer).cpu()

    def __len__(self) -> int:
        return self.fits.shape[0]

    @torch.no_grad()
    def batch(self, frames) -> np.ndarray:
        """(len(frames), 800, 3) float64 mm for 0-based ``frames``."""
        idx = np.asarray(frames, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.source}: no fit for frame index {int(idx.max())} (the file has {len(self)} "
                             "rows: one fit per frame of the split expected)")
        out = self.layer.forward_dsf(self.fits[torch.as_tensor(idx)])
        return torch.cat([out.joints, out.vertices], 1).double().numpy()

    def __call__(self, frame: int) -> np.ndarray:
        return self.batch([int(frame)])[0]
