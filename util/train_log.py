"""Training logs of one run folder: TensorBoard scalars / images, ``train.log`` (one line per epoch), a
machine-readable per-step ``train_log.jsonl``, and PNG plots of the loss curves at the end.

Only the main process writes (``enabled=False`` on the other ranks makes every method a no-op). TensorBoard is
optional at run time: without the package the scalars still go to ``train_log.jsonl``.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _float(v) -> float:
    return float(v.detach().cpu()) if hasattr(v, "detach") else float(v)


class TrainLog:
    """Per-run logger.

    Args:
        run_dir: the run folder (``train.log``, ``train_log.jsonl``, ``runs/`` for TensorBoard, PNG plots).
        enabled: False on non-main ranks (nothing is written).
        tensorboard: write TensorBoard event files under ``run_dir/runs``.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)  # tag -> [(step, value)]
        self._tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "runs"))
            except ImportError:  # tensorboard not installed: jsonl + train.log still written
                self._tb = None
        self._jsonl = open(self.dir / "train_log.jsonl", "a", encoding="utf-8")
        with open(self.dir / "train.log", "a", encoding="utf-8") as f:
            f.write("-" * 40 + f" {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def scalars(self, step: int, values: Mapping[str, float], *, write_tb: bool = True) -> None:
        """Record scalars at ``step`` (history for the plots, one jsonl line, TensorBoard when ``write_tb``)."""
        if not self.enabled:
            return
        vals = {k: _float(v) for k, v in values.items()}
        for k, v in vals.items():
            self.history[k].append((step, v))
        self._jsonl.write(json.dumps({"step": step, **vals}) + "\n")
        if self._tb is not None and write_tb:
            for k, v in vals.items():
                self._tb.add_scalar(k, v, step)

    def image(self, tag: str, step: int, img_hwc: np.ndarray) -> None:
        """An (H, W, 3) uint8 or [0, 1] float image to TensorBoard."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, np.asarray(img_hwc), step, dataformats="HWC")

    def figure(self, tag: str, step: int, fig) -> None:
        """A matplotlib Figure to TensorBoard (rendered with the Agg canvas)."""
        if self.enabled and self._tb is not None:
            self.image(tag, step, figure_to_array(fig))

    def epoch_line(self, epoch: int, values: Mapping[str, float]) -> None:
        """One line in ``train.log``: epoch and ``key=value`` pairs."""
        if not self.enabled:
            return
        text = " ".join(f"{k}={_float(v):.6g}" for k, v in values.items())
        with open(self.dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"epoch {epoch}: {text}\n")
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def plot_loss_curves(self, path: str | os.PathLike | None = None, prefix: str = "loss/") -> Path | None:
        """PNG of every recorded ``prefix*`` curve (one panel per term, log-scale y when positive)."""
        if not self.enabled:
            return None
        tags = sorted(t for t in self.history if t.startswith(prefix))
        if not tags:
            return None
        from matplotlib.figure import Figure

        cols = min(4, len(tags))
        rows = math.ceil(len(tags) / cols)
        fig = Figure(figsize=(3.2 * cols, 2.4 * rows), dpi=100)
        for i, tag in enumerate(tags):
            ax = fig.add_subplot(rows, cols, i + 1)
            steps, vals = zip(*self.history[tag])
            ax.plot(steps, vals, linewidth=1.0)
            if min(vals) > 0:
                ax.set_yscale("log")
            ax.set_title(tag[len(prefix):], fontsize=8)
            ax.tick_params(labelsize=6)
        fig.tight_layout()
        out = Path(path) if path is not None else self.dir / "loss_curves.png"
        fig.savefig(out)
        return out

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def figure_to_array(fig) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a matplotlib Figure (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


__all__ = ["TrainLog", "figure_to_array"]
