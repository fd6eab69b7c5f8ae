"""The loss plot: per-step training loss, its smoothed curve, validation loss, markers.

The smoothed curve is a debiased exponential moving average (Adam-style bias correction,
so the first values are not dragged towards 0), kept incrementally: each frame only the
steps added since the last frame are folded in. It starts afresh at each rescue. On the
linear axis, the steps a rescue threw away (from its alarm to the rescue) do not set the
scale: a blow-up to 1e+50 runs off the top instead of flattening the rest of the run. Curves
are decimated to the plot width keeping each column's min and max
(:func:`engine.history.decimate`) and drawn as the lower and upper envelope, so a frame
costs the same at step 100 and at step 10**7. NaN, ±inf and (on the log axis) values <= 0
are skipped, never drawn and never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.history import Snapshot, decimate
from tui.widgets.plot_base import (
    CachedPlot,
    finite_points,
    linear_ticks,
    log_ticks,
    set_step_axis,
)

SMOOTHING_LEVELS = (0.0, 0.6, 0.9, 0.97, 0.99, 0.995, 0.999)
"""EMA factors the ``s`` / ``S`` keys step through (0 = no smoothing)."""
DEFAULT_SMOOTHING = 0.99
"""EMA factor at start: per-step minibatch loss is noisy, 0.99 averages ~100 steps."""
_EXP_LIMIT = 460.0
"""ln(1e200): the blocked EMA keeps beta**-k below 1e200 so sums never overflow."""
_CLIP = 1e30
"""Values beyond this are clipped before smoothing (a diverged loss of 1e38 stays huge)."""
MARKER_COLORS = {"control": "yellow", "rescue": "green", "alarm": "red"}
"""Vertical marker colour per event kind."""


def ema_extend(
    x: np.ndarray, beta: float, ema: float, count: int
) -> tuple[np.ndarray, float, int]:
    """Fold new values into a debiased EMA; non-finite values are skipped.

    ``e_t = beta * e_{t-1} + (1 - beta) * x_t`` over the finite values, reported as
    ``e_t / (1 - beta**t)``. Vectorized in blocks short enough that ``beta**-k`` stays finite.

    Args:
        x: new values, shape (n,).
        beta: smoothing factor in [0, 1).
        ema: the raw (biased) EMA before ``x``.
        count: finite values folded in before ``x``.

    Returns:
        (smoothed, ema, count): the debiased EMA after each value, shape (n,) (NaN until
        the first finite value), and the state after the last value.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out, ema, count
    with np.errstate(all="ignore"):
        valid = np.isfinite(x)
        xv = np.where(valid, np.clip(x, -_CLIP, _CLIP), 0.0)
        if beta <= 0.0:
            # no smoothing: the last finite value, carried over non-finite ones
            idx = np.where(valid, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            prev = ema if count > 0 else np.nan
            out[:] = np.where(idx >= 0, xv[np.maximum(idx, 0)], prev)
            last = out[-1]
            return out, (float(last) if count + int(valid.sum()) > 0 else ema), count + int(
                valid.sum()
            )
        lnb = math.log(beta)
        block = max(1, int(_EXP_LIMIT / -lnb))
        for s in range(0, n, block):
            vb = valid[s : s + block]
            c = np.cumsum(vb)
            acc = np.cumsum(np.exp(-c * lnb) * xv[s : s + block]) * (1.0 - beta)
            e = np.exp(c * lnb) * (ema + acc)
            total = count + c
            out[s : s + block] = np.where(total > 0, e / -np.expm1(total * lnb), np.nan)
            ema, count = float(e[-1]), int(total[-1])
    return out, ema, count


class SmoothedCurve:
    """The debiased EMA of a growing series, updated incrementally."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        """The smoothing factor in [0, 1)."""
        self._buf = np.empty(0, dtype=np.float64)
        self._n = 0
        self._ema = 0.0
        self._count = 0
        self._last_x: float | None = None
        self.restarts = 0
        """Times the curve was recomputed from the start (summaries built on it reset)."""

    def set_beta(self, beta: float) -> None:
        """Change the factor; the curve is recomputed at the next update."""
        if beta != self.beta:
            self.beta = beta
            self._n = 0

    def update(self, x: np.ndarray, fresh_from: Sequence[int] = ()) -> np.ndarray:
        """Follow the series ``x`` (the whole history so far); return the smoothed curve.

        Only the values after the last update are processed, unless the series got
        shorter or changed under us (replay seeking back): then it restarts. The average
        starts afresh at each index in ``fresh_from`` (the steps of rescues: the weights
        went back, and an average still carrying a 1e+20 blow-up would take thousands of
        steps to come down to the loss it is meant to follow).
        """
        n = x.shape[0]
        if n < self._n or (
            self._n and not _same(float(x[self._n - 1]), self._last_x)
        ):
            self._n = 0
        if self._n == 0:
            self._ema, self._count = 0.0, 0
            self.restarts += 1
        if n > self._n:
            if n > self._buf.shape[0]:
                grown = np.empty(max(n, 2 * self._buf.shape[0], 1024), dtype=np.float64)
                grown[: self._n] = self._buf[: self._n]
                self._buf = grown
            cuts = sorted({k for k in fresh_from if 0 < k < n and k >= self._n})
            for a, b in zip([self._n, *cuts], [*cuts, n], strict=True):
                if a in cuts:
                    self._ema, self._count = 0.0, 0
                if b > a:
                    self._buf[a:b], self._ema, self._count = ema_extend(
                        x[a:b], self.beta, self._ema, self._count)
            self._n = n
            self._last_x = float(x[n - 1])
        return self._buf[: self._n]


class MinMaxSummary:
    """Per-bucket min and max of a growing series, so decimating costs O(buckets), not O(n).

    Buckets hold ``size`` consecutive steps; when there are more than ``MAX_BUCKETS`` the
    bucket size doubles (pairs merge). Only complete buckets are summarized; the few
    values after the last complete bucket are read raw. A spike survives every merge.
    """

    MAX_BUCKETS = 4096
    """Upper bound on stored buckets (twice any plot's width)."""

    def __init__(self) -> None:
        self.size = 1
        """Steps per bucket (a power of two)."""
        self.lo = np.empty(0)
        self.hi = np.empty(0)
        self.n = 0
        """Steps summarized (a multiple of ``size``)."""

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def update(self, y: np.ndarray) -> None:
        """Fold in the complete buckets of ``y`` (the whole series so far) not seen yet."""
        if y.shape[0] < self.n:
            self.reset()
        end = self.n + (y.shape[0] - self.n) // self.size * self.size
        if end > self.n:
            lo, hi = _bucket_minmax(y[self.n : end], self.size)
            self.lo = np.concatenate((self.lo, lo))
            self.hi = np.concatenate((self.hi, hi))
            self.n = end
        while self.lo.shape[0] > self.MAX_BUCKETS:
            m = self.lo.shape[0] // 2 * 2
            self.lo = _pair(np.fmin, self.lo[:m])
            self.hi = _pair(np.fmax, self.hi[:m])
            self.size *= 2
            self.n = m // 2 * self.size

    def decimated(self, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """Like ``decimate(arange(len(y)), y, columns)``, from the buckets plus the tail."""
        n = y.shape[0]
        if n <= 2 * columns or self.size == 1:
            return decimate(np.arange(n, dtype=np.float64), y, columns)
        starts = np.arange(self.lo.shape[0], dtype=np.float64) * self.size
        xs = np.concatenate((np.repeat(starts, 2) + np.tile([0, self.size - 1], starts.size),
                             np.arange(self.n, n, dtype=np.float64)))
        inter = np.empty(2 * self.lo.shape[0])
        inter[0::2], inter[1::2] = self.lo, self.hi
        ys = np.concatenate((inter, y[self.n :]))
        return decimate(xs, ys, columns)


def _bucket_minmax(y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max (NaN-ignoring; NaN when a bucket has no number) of buckets of ``size``."""
    b = np.asarray(y, dtype=np.float64).reshape(-1, size)
    with np.errstate(all="ignore"):
        lo = np.where(np.isnan(b), np.inf, b).min(axis=1)
        hi = np.where(np.isnan(b), -np.inf, b).max(axis=1)
    empty = np.isposinf(lo) & np.isneginf(hi)
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def _pair(f: np.ufunc, a: np.ndarray) -> np.ndarray:
    return f(a[0::2], a[1::2])


def _same(a: float, b: float | None) -> bool:
    return b is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def rescued_spans(events: Sequence[Any]) -> tuple[tuple[int, int], ...]:
    """The stretches of steps a rescue threw away: [alarm step, rescue step) for each alarm
    answered by a rescue (not by a resume). Events in the order they happened."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for ev in events:
        if ev.kind == "alarm" and start is None:
            start = int(ev.step)
        elif ev.kind == "resume":
            start = None
        elif ev.kind == "rescue":
            if start is not None and ev.step > start:
                spans.append((start, int(ev.step)))
            start = None
    return tuple(spans)


class LossPlot(CachedPlot):
    """Training loss per step (grey), its EMA (cyan), validation loss (magenta dots), and
    for the replay of a fork the parent's smoothed loss after the fork step (orange)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.smoother = SmoothedCurve(DEFAULT_SMOOTHING)
        """Incremental EMA of the training loss."""
        self.log_scale = False
        """Plot log10 of the loss (values <= 0 are skipped)."""
        self._snap: Snapshot | None = None
        self._smoothed = np.empty(0)
        self._raw_summary = MinMaxSummary()
        self._smooth_summary = MinMaxSummary()
        self.parent_curve: tuple[np.ndarray, np.ndarray] | None = None
        """A fork's parent run after the fork step: (steps, smoothed loss), drawn in orange."""
        self._kept: tuple[tuple[tuple[int, int], ...], int, float] = ((), 0, -math.inf)
        """(rescued spans, steps looked at, the largest finite loss of those steps outside
        the spans): kept up incrementally, like the summaries."""
        self._parent_spans: tuple[tuple[int, int], ...] = ()
        """The parent's steps that its rescues threw away (they do not set the scale)."""

    def set_parent(self, loss: np.ndarray, fork_step: int, events: Sequence[Any] = ()) -> None:
        """Overlay the parent run's smoothed loss from ``fork_step`` on (replay of a fork).

        ``events``: the parent's. Its smoothed loss starts afresh at its rescues, and the
        steps its rescues threw away do not set the linear scale, as for the run itself (a
        fork made before the parent blew up is the way to compare with that blow-up)."""
        rescues = [e.step for e in events if e.kind == "rescue"]
        smoothed = SmoothedCurve(DEFAULT_SMOOTHING).update(
            np.asarray(loss, dtype=np.float64), rescues)
        steps = np.arange(smoothed.shape[0], dtype=np.float64)
        self.parent_curve = (steps[fork_step:], smoothed[fork_step:])
        self._parent_spans = rescued_spans(events)
        self.mark_dirty()

    def update_data(self, snap: Snapshot, *, log_scale: bool, smoothing: float) -> None:
        """Take a new history snapshot (called by the dashboard's timer when it changed)."""
        self._snap = snap
        self.log_scale = log_scale
        restarts = self.smoother.restarts
        self.smoother.set_beta(smoothing)
        rescues = [e.step for e in snap.events if e.kind == "rescue"]
        self._smoothed = self.smoother.update(snap.loss, rescues)
        if self.smoother.restarts != restarts:
            self._smooth_summary.reset()
        self._raw_summary.update(snap.loss)
        self._smooth_summary.update(self._smoothed)
        self.mark_dirty()

    def draw(self, width: int, height: int) -> None:
        plt = self.plt
        s = self._snap
        scale = " · log" if self.log_scale else ""
        beta = self.smoother.beta
        if s is None or s.steps == 0:
            plt.title(f"loss{scale} — waiting for the first steps")
            return
        cols = max(1, width - 9)
        all_y: list[np.ndarray] = []
        log = self.log_scale
        right = max(1, s.steps)  # steps so far: the axis ends at a round 2000, not 1999
        parent = None
        if self.parent_curve is not None:
            px, py = self.parent_curve
            shown = px <= right  # the parent as far as the fork has got
            parent = (px[shown], py[shown])
        xv, yv = finite_points(s.eval_step, s.val_loss, log=log)
        # On the linear axis, a blow-up that a rescue threw away runs off the top instead of
        # setting the scale. Its values are clipped a plot height above the top first:
        # plotext rasterizes a line dot by dot, even the part outside the limits.
        spans = rescued_spans(s.events)
        cap = math.inf
        if not log and (spans or (parent is not None and self._parent_spans)):
            cap = self._kept_max(s, spans)
            if parent is not None:
                cap = max(cap, _finite_max(parent[1][~_in_spans(parent[0],
                                                                 self._parent_spans)]))
            cap = max(cap, _finite_max(yv[~_in_spans(xv, spans)]))
        top = cap + max(abs(cap), 1.0) if math.isfinite(cap) else math.inf
        all_y += _plot_envelope(plt, *self._raw_summary.decimated(s.loss, cols), cols, log,
                                "gray", top)
        if beta > 0:
            all_y += _plot_envelope(plt, *self._smooth_summary.decimated(self._smoothed, cols),
                                    cols, log, "cyan", top)
        if parent is not None:
            all_y += _plot_envelope(plt, *decimate(*parent, cols), cols, log, "orange", top)
        if xv.size:
            low = yv <= top
            plt.scatter(xv[low].tolist(), yv[low].tolist(), marker="•", color="magenta")
            all_y.append(yv[low])
        for ev in s.events:
            color = MARKER_COLORS.get(ev.kind)
            if color is not None and 0 <= ev.step <= right:
                plt.vline(ev.step, color)
        set_step_axis(plt, right, width)
        labels: list[str] = []
        y = np.concatenate(all_y) if all_y else np.empty(0)
        if y.size:
            lo, hi = float(y.min()), float(y.max())
            if lo < cap < hi:
                hi = cap
                plt.ylim(lo, hi)
            if log:
                ticks, labels = log_ticks(lo, hi, max(2, (height - 3) // 3))
            else:
                ticks, labels = linear_ticks(lo, hi, max(2, (height - 3) // 2))
            if ticks:
                plt.yticks(ticks, labels)
        # plotext centres the title over the canvas (right of the tick labels and the axis)
        # and leaves it out altogether when it does not fit there
        canvas = width - max((len(label) for label in labels), default=6) - 3
        plt.title(self._title(s, scale, beta, canvas))

    def _kept_max(self, s: Snapshot, spans: tuple[tuple[int, int], ...]) -> float:
        """The largest finite loss outside the stretches rescues threw away (`spans`; the
        smoothed loss, a weighted mean that starts afresh at each rescue, stays below it).
        Only the steps added since the last frame are read, unless a new rescue changed
        the stretches or the history got shorter (a replay seeking back)."""
        key, upto, best = self._kept
        end = min(s.steps, s.loss.shape[0])
        if key != spans or end < upto:  # a new rescue, or a replay seeking back
            upto, best = 0, -math.inf
        if end > upto:
            keep = ~_in_spans(np.arange(upto, end), spans)
            best = max(best, _finite_max(s.loss[upto:end][keep]))
        self._kept = (spans, max(upto, end), best)
        return best

    def _title(self, s: Snapshot, scale: str, beta: float, width: int = 1000) -> str:
        """The plot's title line, at most ``width`` columns (plotext leaves out a title that
        does not fit, and a diverged run's numbers are long): to fit, the smoothed loss goes
        first (its curve is drawn), then the parent's step, the scale, the validation loss."""
        parts = {"loss": f"loss {format_loss(s.loss[-1])}"}
        if beta > 0:
            parts["smoothed"] = f"smoothed {format_loss(self._smoothed[-1])}"
        if s.val_loss.size:
            parts["val"] = f"val {format_loss(s.val_loss[-1])}"
        if self.parent_curve is not None and self.parent_curve[0].size:
            parts["parent"] = f"parent@{int(self.parent_curve[0][0])}"

        def text() -> str:
            return " · ".join(parts.values()) + scale

        for drop in ("smoothed", "parent", "scale", "val"):
            if len(text()) <= width:
                break
            if drop == "scale":
                scale = ""
            else:
                parts.pop(drop, None)
        return text()


def _in_spans(x: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Which of the steps x fall in one of the [start, end) spans."""
    inside = np.zeros(x.shape[0], dtype=bool)
    for a, b in spans:
        inside |= (x >= a) & (x < b)
    return inside


def _finite_max(y: np.ndarray) -> float:
    """The largest finite value of y; -inf when it has none."""
    y = y[np.isfinite(y)]
    return float(y.max()) if y.size else -math.inf


def _plot_envelope(plt: Any, x: np.ndarray, y: np.ndarray, columns: int, log: bool,
                   color: str, top: float = math.inf) -> list[np.ndarray]:
    """Draw a decimated curve, finite values above `top` lowered to it; return the y values
    drawn (for the axis's ticks).

    A curve decimated to its per-column min and max (``2 * columns`` points, a pair per
    column) is drawn as two lines, its lower and upper envelope. Drawn as one line, every
    column would hold a vertical stroke from min to max, which plotext rasterizes dot by
    dot: at 100×30 that build took twice as long (43 vs 23 ms), at 200×60 nearly three
    times (308 vs 111 ms), and the time is the UI thread's, taken from training.
    """
    if y.shape[0] == 2 * columns:
        xm = (x[0::2] + x[1::2]) / 2
        with np.errstate(all="ignore"):
            curves = [(xm, np.fmin(y[0::2], y[1::2])), (xm, np.fmax(y[0::2], y[1::2]))]
    else:
        curves = [(x, y)]
    drawn = []
    for cx, cy in curves:
        fx, fy = finite_points(cx, cy, log=log)
        fy = np.minimum(fy, top)
        if fx.size:
            plt.plot(fx.tolist(), fy.tolist(), marker="braille", color=color)
            drawn.append(fy)
    return drawn


def format_loss(v: float) -> str:
    """A loss for the title: 4 significant digits, trailing zeros kept (2.100, not 2.1, so
    the title does not jump about as the numbers change); powers of ten far from 1."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:#.4g}".rstrip(".")
