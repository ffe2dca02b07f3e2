"""Headless evaluation plots (PNG): success curves and per-joint error bars.

Uses ``matplotlib.figure.Figure`` directly (Agg canvas), so no pyplot state or global backend is touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "turbo"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def _line_axes(ax, x: np.ndarray, labels: Sequence[str], curves: Sequence[np.ndarray], colors: list, *,
               xlabel: str, ylabel: str, title: str, legend_loc: str) -> None:
    """One line per method over ``x`` (x limits = its ends), labelled axes, grid and legend."""
    for label, curve, color in zip(labels, curves, colors):
        ax.plot(x, curve, label=label, color=color, linewidth=1.5)
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    ax.legend(loc=legend_loc, fontsize="small")


def plot_success_curves(path: str | Path, labels: Sequence[str], thresholds_mm: np.ndarray,
                        curves: Sequence[np.ndarray], title: str = "NYU") -> None:
    """All methods' max-error success curves (each (T,) over ``thresholds_mm``) on one axes."""
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    ax = fig.subplots()
    _line_axes(ax, thresholds_mm, labels, curves, _colors(len(curves)),
               xlabel="Maximum allowed distance to GT (mm)", ylabel="Fraction of frames within distance",
               title=f"{title}: success rate (max joint error)", legend_loc="lower right")
    ax.set_ylim(0.0, 1.0)
    fig.tight_layout()
    fig.savefig(path)


def plot_per_joint_errors(path: str | Path, names: Sequence[str], joint_names: Sequence[str],
                          per_joint: Sequence[np.ndarray], means: Sequence[float], title: str = "NYU",
                          reverse: bool = True) -> None:
    """Grouped bars of per-joint mean errors (mm) plus 'Mean'; ``reverse`` lists the joints backwards (the
    community's NYU plot: Palm ... Pinky.T; its ICVL / MSRA plots keep the file order)."""
    order = list(range(len(joint_names)))
    if reverse:
        order = order[::-1]
    labels = [joint_names[j] for j in order] + ["Mean"]
    n = len(per_joint)
    width = 0.8 / n
    x = np.arange(len(labels), dtype=np.float64)
    fig = Figure(figsize=(min(14.0, 6.0 + 0.3 * len(labels) * n / 3), 4.8), dpi=120)
    ax = fig.subplots()
    for i, (name, errs, mean, color) in enumerate(zip(names, per_joint, means, _colors(n))):
        values = np.append(np.asarray(errs)[order], mean)
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=name, color=color)
    ax.set_xticks(x, labels, rotation="vertical")
    ax.set_ylabel("Mean error (mm)")
    ax.set_title(f"{title}: per-joint mean error")
    ax.grid(True, axis="y", alpha=0.4)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def plot_viewpoint_curves(path: str | Path, names: Sequence[str], yaw_bins: np.ndarray,
                          yaw_curves: Sequence[np.ndarray], pitch_bins: np.ndarray,
                          pitch_curves: Sequence[np.ndarray], title: str = "MSRA") -> None:
    """Mean error (mm) per yaw bin and per pitch bin (deg), one line per method (NaN bins left as gaps)."""
    fig = Figure(figsize=(12.8, 4.8), dpi=120)
    axes = fig.subplots(1, 2)
    colors = _colors(len(names))
    for ax, bins, curves, label in ((axes[0], yaw_bins, yaw_curves, "yaw"),
                                    (axes[1], pitch_bins, pitch_curves, "pitch")):
        _line_axes(ax, bins, names, curves, colors, xlabel=f"{label} angle (deg)",
                   ylabel="Mean error distance (mm)", title=f"{title}: error vs {label}", legend_loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
