"""The accuracy plot: training and validation accuracy at each evaluation, and their gap.

A widening gap between the two curves is overfitting (CS231n: raise λ); two curves low
and together is underfitting (more capacity or a better lr).
"""

from __future__ import annotations

import numpy as np

from engine.history import Snapshot, decimate
from tui.widgets.plot_base import CachedPlot, finite_points, set_step_axis


class AccuracyPlot(CachedPlot):
    """Train accuracy (cyan) and validation accuracy (magenta) over steps, y in [0, 1]."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self._snap: Snapshot | None = None

    def update_data(self, snap: Snapshot) -> None:
        """Take a new history snapshot (only evaluations matter here)."""
        self._snap = snap
        self.mark_dirty()

    def draw(self, width: int, height: int) -> None:
        plt = self.plt
        s = self._snap
        if s is None or s.eval_step.size == 0:
            plt.title("accuracy — waiting for the first evaluation")
            plt.ylim(0, 1)
            return
        cols = max(1, width - 9)
        steps = s.eval_step.astype(np.float64)
        marker = "braille" if s.eval_step.size > cols else "dot"
        for values, color in ((s.train_acc, "cyan"), (s.val_acc, "magenta")):
            x, y = finite_points(*decimate(steps, values, cols), log=False)
            if x.size:
                plt.plot(x.tolist(), y.tolist(), marker=marker, color=color)
        plt.ylim(0, 1)
        ticks = [0.0, 0.25, 0.5, 0.75, 1.0] if height >= 9 else [0.0, 0.5, 1.0]
        plt.yticks(ticks, [f"{t:.2f}" for t in ticks])
        set_step_axis(plt, max(1.0, float(steps[-1])), width)
        train, val = float(s.train_acc[-1]), float(s.val_acc[-1])
        plt.title(f"accuracy  train {train:.3f} · val {val:.3f} · gap {train - val:+.3f}")
