"""Supervised upper bound of the DSF-claim benchmark (issue 16; docs/DEVIATIONS.md ``## Benchmark``): NOT part of
DSF.

``train_stage=supervised`` trains the same network with the synthetic pre-training losses (docs/method.md,
synthetic losses: pixel maps, PWE joints, MANO joints and vertices, shape prior, negative scale) applied to
*real labelled* crops. The labels are the released-format MANO fits of the real train split
(:mod:`dataloader.nyu_fits`): MANO(fit) joints (21) and closed mesh (779) in mm, carried through the crop
augmentation with the crop (``NYUDataset(point_labels=...)``) and expressed in each crop's norm frame. This module
turns such a real batch into the labelled-batch layout that the shared synthetic loss reads.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from dataloader.nyu_fits import NUM_FIT_JOINTS, NUM_FIT_VERTS, FitPointLabels, default_fits_dir, load_nyu_fits

#: keys of a labelled batch as the shared synthetic loss reads them (``train_render.synthetic_losses``)
TARGET_KEYS = ("depth", "center_xyz", "cube", "M", "mano_joints_uvd_norm", "mano_joints_xyz_norm",
               "mano_verts_xyz_norm")


def fit_point_labels(fits_dir: str | Path, data_root: str | Path, split: str, view: int, mano_layer
                     ) -> FitPointLabels:
    """Point labels (``NYUDataset(point_labels=...)``) from the released-format fits of ``split`` / ``view`` in
    ``fits_dir`` (``""``: ``<data_root>/posePara_lm_collosion``)."""
    folder = Path(fits_dir) if str(fits_dir) else default_fits_dir(data_root)
    fits = load_nyu_fits(folder, split, view)
    return FitPointLabels(fits, mano_layer, source=str(folder / f"nyu-{split}-{view - 1}-*.txt"))


def supervised_targets(real: dict) -> dict[str, Tensor]:
    """Labelled-batch view of a real batch with fit point labels.

    Args:
        real: a batch of ``NYUDataset(point_labels=FitPointLabels(...))`` items: ``depth`` (B, 1, S, S) the real
            crop (input, and the image targets are encoded / predictions decoded against), ``center_xyz``,
            ``cube`` (B, 3) mm, ``M`` (B, 3, 3), ``points_xyz_norm`` / ``points_uvd_norm`` (B, 800, 3): the fit's 21
            joints then its 779 vertices in the crop's norm-xyz / norm-uvd.
    Returns:
        ``depth``, ``center_xyz``, ``cube``, ``M`` and ``mano_joints_uvd_norm`` / ``mano_joints_xyz_norm``
        (B, 21, 3), ``mano_verts_xyz_norm`` (B, 779, 3).
    """
    missing = [k for k in ("points_xyz_norm", "points_uvd_norm") if k not in real]
    if missing:
        raise KeyError(f"train_stage=supervised needs real items with MANO-fit point labels ({missing} missing): "
                       "build the train set with point_labels=FitPointLabels(load_nyu_fits(...), mano_layer)")
    xyz, uvd = real["points_xyz_norm"], real["points_uvd_norm"]
    want = NUM_FIT_JOINTS + NUM_FIT_VERTS
    if xyz.shape[1] != want or uvd.shape[1] != want:
        raise ValueError(f"fit point labels must hold {NUM_FIT_JOINTS} joints + {NUM_FIT_VERTS} vertices = {want} "
                         f"points, got {tuple(xyz.shape)} / {tuple(uvd.shape)}")
    j = NUM_FIT_JOINTS
    return {"depth": real["depth"], "center_xyz": real["center_xyz"], "cube": real["cube"], "M": real["M"],
            "mano_joints_uvd_norm": uvd[:, :j], "mano_joints_xyz_norm": xyz[:, :j],
            "mano_verts_xyz_norm": xyz[:, j:]}
