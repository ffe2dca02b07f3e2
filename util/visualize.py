"""PNG figures people look at: depth crops with skeletons, rendered vs observed depth (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from util.geometry import FOREGROUND_THRESHOLD
from util.joints import MANO21_BONES, NYU14_BONES


def _figure(rows: int, cols: int, size: float = 2.4):
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(cols * size, rows * size), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, axes


def _bones(num_joints: int):
    return MANO21_BONES if num_joints == 21 else NYU14_BONES if num_joints == 14 else ()


def draw_skeleton(ax, joints_uvd_norm: np.ndarray, color: str, size: int = 128) -> None:
    """Draw (J, 3) norm-uvd joints (J = 14 NYU or 21 MANO order) on a crop of ``size`` pixels."""
    px = (np.asarray(joints_uvd_norm)[:, :2] + 1.0) * size / 2.0
    for a, b in _bones(len(px)):
        ax.plot(px[[a, b], 0], px[[a, b], 1], "-", color=color, lw=1.0)
    ax.plot(px[:, 0], px[:, 1], "o", color=color, ms=2.0)


def save_crops_with_skeletons(path: str | Path, crops: np.ndarray, skeletons: Sequence[tuple[np.ndarray, str]],
                              titles: Sequence[str] | None = None, cols: int = 4) -> Path:
    """Grid of normalised crops (N, H, W) in [-1, 1] with skeleton overlays.

    ``skeletons``: list of (joints (N, J, 3) norm-uvd, colour) drawn on every crop.
    """
    crops = np.asarray(crops)
    n = len(crops)
    rows = (n + cols - 1) // cols
    fig, axes = _figure(rows, cols)
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(crops[i], cmap="viridis", vmin=-1.0, vmax=1.0)
        for joints, color in skeletons:
            draw_skeleton(ax, joints[i], color, crops.shape[-1])
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def save_render_comparison(path: str | Path, observed: np.ndarray, rendered: np.ndarray, cols: int = 4) -> Path:
    """Rows of (observed crop, rendered crop, |difference| on the union of foregrounds) for N samples."""
    observed, rendered = np.asarray(observed), np.asarray(rendered)
    n = min(len(observed), cols)
    fig, axes = _figure(3, n)
    for i in range(n):
        union = (observed[i] < FOREGROUND_THRESHOLD) | (rendered[i] < FOREGROUND_THRESHOLD)
        diff = np.where(union, np.abs(observed[i] - rendered[i]), 0.0)
        for r, (img, title, kw) in enumerate([(observed[i], "observed", dict(vmin=-1, vmax=1)),
                                              (rendered[i], "rendered", dict(vmin=-1, vmax=1)),
                                              (diff, "|diff|", dict(vmin=0, vmax=0.5, cmap="magma"))]):
            axes[r, i].imshow(img, **({"cmap": "viridis"} | kw))
            axes[r, i].set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
