"""MANO-order predictions in each data set's own joints and label frame (training logs, tests, annotation).

- :func:`dataset_joints`: (..., 21, 3) MANO-order joints -> the data set's label joints (NYU 14 evaluation
  joints with the palm points filled from MANO, ICVL 16, MSRA 21), any per-joint quantity;
- :func:`dsf_frame_errors`: DSF's own per-frame metric, the mean distance over the joints its test compares
  (``util.evaluate.PROTOCOLS[dataset].dsf_joints``: NYU 11, ICVL 15, MSRA 19);
- :func:`community_uvd`: data-set-order joints (mm, loader frame) -> (u, v, d) of the community files (ICVL:
  un-mirrored).
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from util.geometry import xyz_to_uvd
from util.joints import MANO_TO_ICVL, MANO_TO_MSRA, NYU_EVAL_14

Array = Union[np.ndarray, torch.Tensor]
#: label joints per data set
NUM_LABEL_JOINTS = {"nyu": len(NYU_EVAL_14), "icvl": len(MANO_TO_ICVL), "msra": len(MANO_TO_MSRA)}


def dataset_joints(joints21: Array, dataset: str) -> Array:
    """(..., 21, 3) MANO-order joints -> (..., J, 3) in ``dataset``'s label order (numpy or torch).

    NYU: the 14 evaluation joints, PALM_1/2/3 from the MANO joints (:func:`dataloader.nyu_joints.nyu36_from_mano21`;
    only the first 11 are comparable with DSF); ICVL / MSRA: ``MANO_TO_ICVL`` / ``MANO_TO_MSRA`` (every label joint
    has a MANO counterpart; ICVL's palm is MANO's wrist, as in DSF).
    """
    if dataset == "nyu":
        from dataloader.nyu_joints import nyu36_from_mano21

        return nyu36_from_mano21(joints21)[..., list(NYU_EVAL_14), :]
    if dataset == "icvl":
        return joints21[..., list(MANO_TO_ICVL), :]
    if dataset == "msra":
        return joints21[..., list(MANO_TO_MSRA), :]
    raise ValueError(f"dataset must be one of {tuple(NUM_LABEL_JOINTS)}, got {dataset!r}")


def dsf_frame_errors(joints21_mm: Array, labels_mm: Array, dataset: str) -> Array:
    """(B,) DSF's per-frame error (mm): mean distance over the data set's DSF joints.

    Args:
        joints21_mm: (B, 21, 3) MANO-order prediction, mm; labels_mm: (B, J, 3) labels in the same frame.
    """
    from util.evaluate import PROTOCOLS

    sel = list(PROTOCOLS[dataset].dsf_joints)
    if dataset == "nyu":  # MANO_TO_NYU covers exactly the 11 (the palm points are not MANO joints)
        from util.joints import MANO_TO_NYU

        pred = joints21_mm[..., [MANO_TO_NYU[j] for j in sel], :]
    else:
        pred = dataset_joints(joints21_mm, dataset)[..., sel, :]
    diff = pred - labels_mm[..., sel, :]
    if isinstance(diff, torch.Tensor):
        return diff.norm(dim=-1).mean(-1)
    return np.linalg.norm(diff, axis=-1).mean(-1)


def community_uvd(joints_mm: Array, dataset_obj, camera) -> np.ndarray:
    """(N, J, 3) joints (mm, the loader's frame) -> (N, J, 3) float64 (u px, v px, d mm) in the community files'
    frame: projected with ``camera``, then ``dataset_obj.to_file_uvd`` when the loader has one (ICVL's mirror)."""
    if isinstance(joints_mm, torch.Tensor):
        joints_mm = joints_mm.detach().cpu().double().numpy()
    uvd = xyz_to_uvd(np.asarray(joints_mm, np.float64), camera)
    to_file = getattr(dataset_obj, "to_file_uvd", None)
    return to_file(uvd) if to_file is not None else uvd
