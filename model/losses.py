"""Regression loss of DSF (dsf-method.md §6.0). The other DSF losses live elsewhere (later issue)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Huber threshold in normalised units (about 1.25 mm for the NYU cube)
HUBER_DELTA = 0.01


def huber(x: torch.Tensor, y: torch.Tensor, delta: float = HUBER_DELTA, size_average: bool = True) -> torch.Tensor:
    """Huber loss of ``x - y`` (official ``SmoothL1Loss``): ``0.5 z^2`` if ``|z| < delta`` else
    ``delta (|z| - delta / 2)``.

    Args:
        x, y: tensors of the same shape (..., D).
        delta: threshold between the quadratic and the linear branch.
        size_average: True -> mean over all elements; False -> mean over the last dimension, sum over the rest.
    Returns:
        scalar tensor.
    """
    if x.shape != y.shape:
        raise ValueError(f"huber: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    per_row = F.huber_loss(x, y, reduction="none", delta=delta).mean(dim=-1)
    return per_row.mean() if size_average else per_row.sum()
