"""The event log: controls applied, evaluations, alarms, warnings, rescues, pauses.

Fed from history snapshots: only the events and evaluations that arrived since the last
frame are appended, in step order. When the history got shorter (replay seeking back)
the log is rebuilt from the snapshot.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from engine.history import Event, Snapshot

MAX_LINES = 400
"""Lines kept in the log widget."""
EVAL_LINE_SECONDS = 2.0
"""At most one evaluation line per this many seconds (fast runs evaluate 50×/s); the
latest evaluation of a burst is the one logged. Events are never rate-limited."""
KIND_STYLES = {
    "control": "yellow",
    "alarm": "bold red",
    "warning": "dark_orange",
    "rescue": "bold green",
    "eval": "",
    "info": "dim",
    "pause": "dim",
    "resume": "dim",
    "finish": "bold",
}
"""Line style per event kind."""


def describe_event(ev: Event) -> str:
    """One log line (without the step) for a history event."""
    if ev.kind == "alarm":
        return f"ALARM {ev.name}: {ev.detail}"
    if ev.kind == "warning":
        return f"warning {ev.name}: {ev.detail}"
    if ev.kind == "info" and ev.name == "refused":
        return f"refused: {ev.detail}"
    if ev.detail:
        return ev.detail
    return f"{ev.kind} {ev.name} {'' if ev.value is None else ev.value}".strip()


def describe_eval(train_acc: float, val_acc: float, val_loss: float) -> str:
    """One log line for an evaluation: ``acc 0.374/0.366`` (train/val, fits 80 columns)."""
    del val_loss  # on the loss plot; the log line stays short
    return f"acc {train_acc:.3f}/{val_acc:.3f}"


class EventLog(RichLog):
    """A small scrolling log, newest line at the bottom (never focused: keys are the
    dashboard's, so arrows and home/end seek in replay instead of scrolling the log)."""

    can_focus = False

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, max_lines=MAX_LINES, wrap=True, markup=False, min_width=10,
                         auto_scroll=True)
        self._events = 0
        self._evals = 0
        self._last_eval_line = -EVAL_LINE_SECONDS
        self.plain_lines: list[str] = []
        """Every line written, as plain text (tests read it; capped like the widget)."""

    def sync(self, snap: Snapshot) -> bool:
        """Append what is new in ``snap``; returns True when something was written."""
        if len(snap.events) < self._events or snap.eval_step.size < self._evals:
            self.clear()
            self.plain_lines.clear()
            self._events = self._evals = 0
        new: list[tuple[int, int, str, str]] = []
        for ev in snap.events[self._events :]:
            new.append((ev.step, 0, ev.kind, describe_event(ev)))
        for i in range(self._evals, snap.eval_step.size):
            new.append((int(snap.eval_step[i]), 1, "eval", describe_eval(
                float(snap.train_acc[i]), float(snap.val_acc[i]), float(snap.val_loss[i]))))
        evals = [t for t in new if t[1] == 1]
        now = time.monotonic()
        if evals and self._eval_line_due(now):
            new = [t for t in new if t[1] == 0] + evals[-1:]
            self._last_eval_line = now
        elif evals:
            new = [t for t in new if t[1] == 0]
        self._events, self._evals = len(snap.events), int(snap.eval_step.size)
        if not new:
            return False
        new.sort(key=lambda t: (t[0], t[1]))
        for step, _, kind, line in new[-MAX_LINES:]:
            self.add_line(f"{step:>6} {line}", kind)
        return True

    def _eval_line_due(self, now: float) -> bool:
        """True when an evaluation line may be written now."""
        return now - self._last_eval_line >= EVAL_LINE_SECONDS

    def add_line(self, line: str, kind: str = "info") -> None:
        """Write one line (also used by the dashboard for its own notes)."""
        self.plain_lines.append(line)
        del self.plain_lines[:-MAX_LINES]
        self.write(Text(line, style=KIND_STYLES.get(kind, "")))
