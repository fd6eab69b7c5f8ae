"""The replay dashboard: the same panels, fed by an ``engine.replay.Replayer``.

Training controls are inactive (a recording is read-only; ``descent fork`` continues a
run with new settings), so some keys mean something else here: ``]`` / ``[`` jump to the
next / previous control change or alarm, ``n`` / ``p`` to the next / previous evaluation.
"""

from __future__ import annotations

import time
from typing import Any

from textual.binding import Binding

from engine.history import Snapshot
from tui.screens.dashboard import Dashboard
from tui.screens.goto import GotoScreen
from tui.widgets.alarm_banner import AlarmBanner
from tui.widgets.loss_plot import LossPlot


def format_speed(speed: float | None) -> str:
    """``1×``, ``0.25×``, ``max``."""
    return "max" if speed is None else f"{speed:g}×"


class ReplayDashboard(Dashboard):
    """Plays a recording: the timer advances it by the wall time since the last tick."""

    HINTS = "space play  ., speed  ←→ 1%  ↑↓ 10%  : step  n/p eval  ][ mark  ? help  q quit"
    HELP_TITLE = "descent — replay keys"
    BINDINGS = [
        Binding("space", "send('toggle_pause')", "play / pause", key_display="space"),
        Binding("full_stop", "send('faster')", "faster (0.25× … 1000×, max)", key_display="."),
        Binding("comma", "send('slower')", "slower", key_display=","),
        Binding("right", "seek(0.01)", "forward 1%", key_display="→"),
        Binding("left", "seek(-0.01)", "back 1%", key_display="←"),
        Binding("up", "seek(0.1)", "forward 10%", key_display="↑"),
        Binding("down", "seek(-0.1)", "back 10%", key_display="↓"),
        Binding("pagedown", "seek(0.1)", "forward 10%", key_display="pgdn"),
        Binding("pageup", "seek(-0.1)", "back 10%", key_display="pgup"),
        Binding("home", "send('start')", "to the start"),
        Binding("end", "send('end')", "to the end"),
        Binding("colon", "goto", "go to a step (type it, Enter)", key_display=":"),
        Binding("n", "send('next_eval')", "next evaluation"),
        Binding("p", "send('prev_eval')", "previous evaluation"),
        Binding("right_square_bracket", "send('next_mark')",
                "next control change / alarm / rescue", key_display="]"),
        Binding("left_square_bracket", "send('prev_mark')",
                "previous control change / alarm / rescue", key_display="["),
        Binding("right_curly_bracket", "mark(1)", "next alarm", key_display="}"),
        Binding("left_curly_bracket", "mark(-1)", "previous alarm", key_display="{"),
        Binding("s", "smoothing(1)", "more smoothing of the loss curve"),
        Binding("S", "smoothing(-1)", "less smoothing"),
        Binding("g", "toggle_log", "loss axis log ↔ linear"),
        Binding("question_mark", "help", "this help", key_display="?"),
    ]

    def __init__(self, session: Any, *, frozen_clock: bool = False) -> None:
        super().__init__(session, frozen_clock=frozen_clock)
        self._last_tick: float | None = None

    def on_mount(self) -> None:
        super().on_mount()
        parent = self.session.parent_history() if hasattr(self.session, "parent_history") else None
        if parent is not None:
            history, fork_step = parent
            snap = history.snapshot()
            self.query_one("#loss-plot", LossPlot).set_parent(snap.loss, fork_step, snap.events)

    def advance(self) -> None:
        """Advance playback by the wall time since the previous tick."""
        now = time.monotonic()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 1.0)
        self._last_tick = now
        if not self.frozen_clock:
            self.session.tick(dt)

    def header_fields(self, snap: Snapshot) -> list[str]:
        s = self.session
        c = s.config
        return [
            f"replay {format_speed(s.speed)}",
            f"step {s.step}/{s.total_steps}",
            self.dataset_spec(),
            str(c.loss),
            str(c.optimizer),
            f"epoch {float(s.epoch):.2f}",
            self.elapsed_text(),
        ]

    def on_new_data(self, snap: Snapshot, state: str) -> None:
        banner = self.query_one("#alarm", AlarmBanner)
        alarm = self.session.alarm
        if alarm is None:
            banner.hide()
        else:
            banner.show_alarm(f"DIVERGED (recorded): rule {alarm.rule} at step {alarm.step}, "
                              f"loss {alarm.loss:.4g} — {alarm.detail}")

    def refresh_view(self, force: bool = False) -> None:
        super().refresh_view(force)
        notice = getattr(self.session, "notice", "")
        if notice:
            self.note(notice)
            self.session.notice = ""

    # -- actions -----------------------------------------------------------------------
    def action_send(self, name: str) -> None:
        """Forward a playback command; the view follows at once."""
        before = self.session.step
        self.session.send(name)
        if name in ("next_eval", "prev_eval", "next_mark", "prev_mark") and \
                self.session.step == before:
            self.note(f"no {'later' if name.startswith('next') else 'earlier'} "
                      f"{'evaluation' if 'eval' in name else 'mark'}")
        self.refresh_view()

    def action_seek(self, delta: float) -> None:
        self.session.seek_fraction(delta)
        self.refresh_view()

    def action_mark(self, direction: int) -> None:
        if self.session.next_mark(direction, ("alarm",)) is None:
            self.note(f"no {'later' if direction > 0 else 'earlier'} alarm")
        self.refresh_view()

    def opens_input(self, key: str) -> bool:
        """True for ``:`` (the app holds the keys typed after it for the go-to prompt)."""
        return key == "colon"

    def action_goto(self) -> None:
        def done(step: int | None) -> None:
            if step is not None:
                self.session.seek(step)
                self.refresh_view()

        self.app.push_screen(GotoScreen(self.session.total_steps), done)
