"""A PlotextPlot that draws only when its data or size changed, plus axis helpers.

textual-plotext rebuilds the whole plotext figure on every ``render()``; Textual calls
``render()`` whenever anything asks the widget to repaint (a resize, a screen on top,
a refresh of a neighbour). :class:`CachedPlot` keeps the last built text and rebuilds it
only when :meth:`mark_dirty` was called or the size or theme changed, so the cost of a
frame is paid once per data change, never per repaint.
"""

from __future__ import annotations

import math
import time

import numpy as np
from rich.text import Text
from textual.app import RenderResult
from textual.geometry import Region
from textual.strip import Strip
from textual_plotext import PlotextPlot

clock = time.perf_counter
"""The clock redraws are timed with (a test replaces it)."""
MIN_PLOT_WIDTH = 12
"""Below this many columns a plot draws a one-line note instead of axes."""
MIN_PLOT_HEIGHT = 4
"""Below this many rows a plot draws a one-line note instead of axes."""


class CachedPlot(PlotextPlot):
    """A plotext plot whose subclasses implement :meth:`draw`, called only when dirty."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self._generation = 0
        """Bumped by :meth:`mark_dirty`; part of the cache key."""
        self._cache_key: tuple[object, ...] | None = None
        self._cached: RenderResult = Text("")
        self.last_build_ms = 0.0
        """Wall time of the last rebuild in milliseconds, the whole repaint that followed it
        (plotext's build, its ANSI text parsed, and Textual's conversion of that text into
        lines): what the dashboard's duty cycle spends per redraw."""
        self._rebuilt = False
        self.builds = 0
        """Number of rebuilds so far (tests use it to prove that clean frames are free)."""

    def mark_dirty(self) -> None:
        """Ask for a rebuild at the next repaint."""
        self._generation += 1
        self.refresh()

    def draw(self, width: int, height: int) -> None:
        """Add this plot's data to ``self.plt`` (already cleared). Override."""

    def render(self) -> RenderResult:
        width, height = self.size.width, self.size.height
        key = (width, height, self._generation, self.app.theme, self.theme)
        if key == self._cache_key:
            return self._cached
        t0 = clock()
        if width < MIN_PLOT_WIDTH or height < MIN_PLOT_HEIGHT:
            self._cached = Text("(too small to plot)", style="dim")
        else:
            plt = self.plt
            plt.clear_figure()
            self.draw(width, height)
            self._cached = super().render()
        self._cache_key = key
        self.builds += 1
        self.last_build_ms = (clock() - t0) * 1000
        self._rebuilt = True  # render_lines adds the conversion into lines
        return self._cached

    def render_lines(self, crop: Region) -> list[Strip]:
        t0 = clock()
        strips = super().render_lines(crop)
        if self._rebuilt:
            # render() ran inside this call: time the whole repaint. The conversion of the
            # plot's text into lines cost about as much as the build itself (100x30), and
            # timing the build alone redrew the plots twice as often as PLOT_DUTY means.
            self._rebuilt = False
            self.last_build_ms = (clock() - t0) * 1000
        return strips


def finite_points(x: np.ndarray, y: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Keep the points a plot can draw: finite y, and y > 0 on a log axis (then log10 y).

    Args:
        x: positions, shape (n,).
        y: values, shape (n,); may hold NaN, ±inf and (on a log axis) values <= 0.

    Returns:
        (x, y) of the drawable points, y already in log10 units when ``log``.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        keep = np.isfinite(y)
        if log:
            keep &= y > 0
            return x[keep], np.log10(y[keep])
        # plotext computes ranges in float64; keep it away from overflow
        keep &= np.abs(y) < 1e300
    return x[keep], y[keep]


def log_ticks(lo: float, hi: float, max_ticks: int) -> tuple[list[float], list[str]]:
    """Tick positions (in log10 units) and labels for a log axis spanning [lo, hi].

    Args:
        lo: lowest log10 value shown.
        hi: highest log10 value shown.
        max_ticks: at most this many ticks (about one per three rows).

    Returns:
        (positions, labels), e.g. ([0, 1], ["1", "10"]).
    """
    max_ticks = max(2, max_ticks)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    for mults in ((1,), (1, 3), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            math.log10(m) + d
            for d in range(math.floor(lo) - 1, math.ceil(hi) + 1)
            for m in mults
            if lo <= math.log10(m) + d <= hi
        ]
        if len(ticks) >= 3 or mults[-1] == 9:
            break
    step = max(1, math.ceil(len(ticks) / max_ticks))
    ticks = ticks[::step]
    if len(ticks) < 2:
        ticks = [lo, hi]
    return ticks, [format_tick(10.0**t) for t in ticks]


def format_tick(v: float) -> str:
    """A short axis label: 0.02, 1.5, 300, 2e+04."""
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-3 <= a < 1e4:
        return f"{v:.3g}"
    return f"{v:.0e}"


def nice_ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    """Round tick positions (1, 2 or 5 × 10^k apart) covering [lo, hi], at most ``max_ticks``.

    Args:
        lo: axis start.
        hi: axis end (> lo).
        max_ticks: upper bound on the number of ticks (>= 2).
    """
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return [lo]
    max_ticks = max(2, max_ticks)
    raw = span / (max_ticks - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks: list[float] = []
    t = first
    while t <= hi + 1e-9 * span and len(ticks) < max_ticks + 1:
        ticks.append(t)
        t += step
    return ticks


def linear_ticks(lo: float, hi: float, max_ticks: int) -> tuple[list[float], list[str]]:
    """Round tick positions and labels for a linear axis spanning [lo, hi].

    The labels share one style, with as many digits as the tick step needs: 1.80 1.85
    1.90, or 2.5e+04 3.0e+04 once a value reaches 10^4 (a diverged loss climbs to 1e+30
    and beyond; plotext's own labels then print every digit of it and leave no room for
    the plot).

    Returns:
        (positions, labels); the ends when no two round ticks fit, one tick when the
        span is below a millionth of the values; none when not finite.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if not hi - lo > 1e-6 * max(abs(lo), abs(hi)):
        # flat to a millionth (or below float resolution, where round steps collapse)
        return [lo], [format_tick(lo)]
    ticks = _densest_round_ticks(lo, hi, max(2, max_ticks))
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.0
    if not step > 0:  # no room for two round ticks: label the ends, told apart
        digits = next(p for p in range(3, 18) if f"{lo:.{p}g}" != f"{hi:.{p}g}")
        return [lo, hi], [f"{lo:.{digits}g}", f"{hi:.{digits}g}"]
    big = max(abs(t) for t in ticks)
    if big >= 1e4 or big < 1e-3:
        # digits of the mantissa the step needs: 2.5e+04 beside 3.0e+04, 1e+53 beside 2e+53
        digits = max(0, _decade(big) - _decade(step)) if big else 0
        labels = [f"{t:.{digits}e}" for t in ticks]
    else:
        decimals = max(0, -_decade(step))
        labels = [f"{t:.{decimals}f}" for t in ticks]
    return ticks, ["0" if abs(t) < 1e-9 * step else lab
                   for t, lab in zip(ticks, labels, strict=True)]


def _decade(v: float) -> int:
    """floor(log10(v)) for v > 0, robust to v = 0.9999999999999999 × 10^k (the sum of a
    float step): 1 × 10^k's decade."""
    return math.floor(math.log10(v) + 1e-9)


def _densest_round_ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    """Multiples of the smallest 1, 2 or 5 × 10^k step that puts at most ``max_ticks`` of
    them in [lo, hi] (computed as k·step, so 0.3 is 3 × 0.1, not 0.1 + 0.1 + 0.1)."""
    mag = 10.0 ** math.floor(math.log10((hi - lo) / max_ticks))
    for step in (m * mag for m in (1, 2, 5, 10, 20, 50)):
        first, last = math.ceil(lo / step), math.floor(hi / step)
        if last - first + 1 <= max_ticks:
            return [k * step for k in range(first, last + 1)]
    return []


def step_ticks(right: float, max_ticks: int) -> list[float]:
    """Round ticks on a step axis from 0 to ``right``: whole steps only, so a short run's
    axis (right = 1 before the second evaluation) reads "0 1", not "0 0 1"."""
    return [t for t in nice_ticks(0.0, right, max_ticks) if t == math.floor(t)]


def set_step_axis(plt: object, right: float, width: int) -> None:
    """x axis from 0 to ``right`` with whole-step ticks (10k, 20k … for long runs)."""
    ticks = step_ticks(right, max(2, width // 12))
    plt.xlim(0, right)  # type: ignore[attr-defined]
    plt.xticks(ticks, [format_step(t) for t in ticks])  # type: ignore[attr-defined]


def format_step(v: float) -> str:
    """A step count for an axis: 500, 12k, 1.5M."""
    v = float(v)
    if abs(v) < 10_000:
        return f"{v:.0f}"
    if abs(v) < 1e6:
        return f"{v / 1e3:g}k"
    return f"{v / 1e6:g}M"
