"""Snapshot tests of the dashboard (pytest-textual-snapshot) in a deterministic state.

The state: a seeded Trainer on the blobs set that ran exactly 600 steps (FINISHED) with
two control changes, drawn with the app's ``frozen_clock`` so elapsed time and speed are
fixed text. Update the baselines with ``pytest tests/test_snapshots.py --snapshot-update``
after an intended change of the layout, and look at the SVGs before committing them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config import Config
from engine.history import Event
from engine.replay import Replayer
from engine.trainer import Trainer
from tui.app import DescentApp
from tui.screens.dashboard import LiveDashboard
from tui.screens.replay import ReplayDashboard

STEPS = 600
EXAMPLE = Path(__file__).resolve().parent.parent / "recordings" / "example.jsonl"


def finished_app(ds: Any) -> DescentApp:
    def make_session(progress: Any) -> Trainer:
        script = [Event(200, "control", "lr", 0.05), Event(400, "control", "reg", 0.01)]
        cfg = Config(data="blobs", seed=0, steps=STEPS, eval_every=50, batch_size=64,
                     lr=0.1, reg=0.001)
        t = Trainer(cfg, ds, script=script)
        t.run()
        return t

    return DescentApp(make_session, frozen_clock=True)


async def until_drawn(pilot: Any, screen: type = LiveDashboard) -> None:
    for _ in range(3000):  # at most 60 s: the first run may load compiled kernels
        if isinstance(pilot.app.screen, screen):
            break
        await pilot.pause(0.02)
    assert isinstance(pilot.app.screen, screen)
    for _ in range(3):
        await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_dashboard_snapshot(snap_compare, blobs, size):
    assert snap_compare(finished_app(blobs), terminal_size=size, run_before=until_drawn)


def test_help_snapshot(snap_compare, blobs):
    async def help_open(pilot: Any) -> None:
        await until_drawn(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(finished_app(blobs), terminal_size=(80, 24), run_before=help_open)


def test_replay_of_the_example_snapshot(snap_compare):
    """The shipped example recording, paused just after its alarm and rescue."""

    def make_session(progress: Any) -> Replayer:
        r = Replayer(EXAMPLE)
        r.send("pause")
        r.seek(1500)
        return r

    async def drawn(pilot: Any) -> None:
        await until_drawn(pilot, ReplayDashboard)

    app = DescentApp(make_session, frozen_clock=True)
    assert snap_compare(app, terminal_size=(80, 24), run_before=drawn)
