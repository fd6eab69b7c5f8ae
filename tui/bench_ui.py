"""Bench sections that need more than the engine: the dashboard's cost on training speed,
start-up time of the real command in a pseudo-terminal, and dataset loading. ``descent
bench`` registers them with ``engine.bench.add_section``.

The dashboard row trains the same run two ways, in pairs (A B, A B, ...): A in this thread
with no UI (exactly what ``--headless`` does), B in the dashboard's worker thread, timed
from half a second after the first plotted frame, while the dashboard redraws at 10 Hz in
Textual's headless test driver (everything but the terminal write). Steps/s is the
trainer's step counter over wall time. The ratio shown is the median of the pairs' ratios:
the machine's speed drifts by ±20% over seconds on a shared VM, and a pair's two runs are
close in time.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

Row = tuple[str, str, str, str, str]

SECONDS = 1.5
"""Length of one timed run."""
SETTLE_SECONDS = 0.5
"""The dashboard run starts timing this long after the first frame with plots (the
dashboard's start-up, CSS and first layout, is not what the row measures)."""
REPEATS = 15
"""Pairs of timed runs (headless, dashboard)."""


def _headless_rate(trainer: Any, seconds: float) -> float:
    s0, t0 = trainer.step, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        trainer.run_chunk()
    return (trainer.step - s0) / (time.perf_counter() - t0)


async def _dashboard_rate(trainer: Any, seconds: float) -> float:
    from tui.app import DescentApp
    from tui.widgets.loss_plot import LossPlot

    app = DescentApp(lambda progress: trainer)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(500):  # wait (bounded) for the worker to step and the plots to draw
            plots = app.screen.query(LossPlot)
            if trainer.step > 0 and plots and plots.first().builds > 0:
                break
            await pilot.pause(0.01)
        await asyncio.sleep(SETTLE_SECONDS)  # steady state: mounting and first layout done
        s0, t0 = trainer.step, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = (trainer.step - s0) / (time.perf_counter() - t0)
        app.stop_event.set()
        await pilot.press("q")
    return rate


def bench_dashboard(ctx: Any = None) -> list[Row]:
    """Training speed with the dashboard open vs headless, batch 256, full synthetic."""
    from engine.bench import median_ratio
    from engine.config import Config
    from engine.data import load_dataset
    from engine.trainer import Trainer

    ds = load_dataset("synthetic")
    rows: list[Row] = []
    for loss in ("softmax", "svm"):
        cfg = Config(loss=loss, batch_size=256)
        headless, ui = [], []
        for _ in range(REPEATS):
            t = Trainer(cfg, ds)
            t.run_chunk()  # first chunk: warm caches
            headless.append(_headless_rate(t, SECONDS))
            t = Trainer(cfg, ds)
            t.run_chunk()
            ui.append(asyncio.run(_dashboard_rate(t, SECONDS)))
        a, b = statistics.median(headless), statistics.median(ui)
        pairs = [u / h for u, h in zip(ui, headless, strict=True)]
        spread = f"pairs {min(pairs):.2f}-{max(pairs):.2f}"
        rows.append((f"dashboard open, {loss} B=256", f"{b:,.0f} steps/s",
                     f"{a:,.0f} headless", f"{median_ratio(ui, headless):.2f}x",
                     f"target >= 0.90x; median of {REPEATS} pairs ({spread})"))
    return rows


STARTUP_RUNS = 3
"""Start-ups timed per dataset (the median is shown)."""


def _startup(spec: str) -> tuple[float, float]:
    """Seconds from exec to the first frame (the loading screen) and to RUNNING; NaN for
    a milestone the command did not reach within its bound."""
    import sys

    from tui.pty_terminal import Terminal

    def since_start(reached: bool) -> float:
        return time.monotonic() - term.started if reached else float("nan")

    with tempfile.TemporaryDirectory() as tmp:
        term = Terminal([sys.executable, "-m", "tui", "--data", spec, "--no-record"], cwd=tmp)
        try:
            first = since_start(term.read_until(b"starting", 60.0))
            running = since_start(term.read_until(b"RUNNING", 120.0))
            term.send("q")
            term.wait(15.0)
        finally:
            term.kill()
    return first, running


def bench_startup(ctx: Any = None) -> list[Row]:
    """Warm-cache start-up of the real ``descent`` in a pseudo-terminal."""
    rows: list[Row] = []
    for spec in ("synthetic", "blobs"):
        runs = [_startup(spec) for _ in range(STARTUP_RUNS)]
        first = statistics.median(r[0] for r in runs)
        running = statistics.median(r[1] for r in runs)
        rows.append((f"start-up, {spec}, warm cache", f"{first:.2f} s", "target < 1.5 s",
                     f"{running:.2f} s",
                     "to the first frame (loading screen); then to RUNNING (data, trainer)"))
    return rows


def bench_data(ctx: Any = None) -> list[Row]:
    """Load time and peak memory of full-size CIFAR-10 (python version) and synthetic."""
    from engine.data import bench_load

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        r = bench_load(tmp)
        rows.append(("load CIFAR-10 python, full size", f"{r['seconds']:.2f} s",
                     "< 5 s", f"peak {r['peak_mb']:,.0f} MB", "target < 2,000 MB"))
        r = bench_load(tmp, spec="synthetic")
        rows.append(("generate synthetic (49k+1k+10k)", f"{r['seconds']:.2f} s", "",
                     f"peak {r['peak_mb']:,.0f} MB", "fresh process, incl. imports"))
    return rows
