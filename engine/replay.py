"""Replay: a recording played back as a "session" the dashboard can show like a live run.

:class:`Replayer` has the attributes the dashboard reads from a Trainer (``history``,
``config``, ``state``, ``alarm``, ``step``, ``epoch``, ``steps_per_s``, ``send``) plus
playback controls. ``history`` holds exactly the first ``position`` steps, with the
evaluations and events at steps ``<= position`` (an event at step k took effect before
step k ran, so it is shown once k steps are shown, as it was live).

Playback time is the recording's *running* time (the ``t`` stamps, pauses excluded) times
``speed``; within a ``steps`` block the steps are spread evenly. In follow mode the file
is re-read as it grows (like ``tail -f``); a partial last line waits for its newline.
"""

from __future__ import annotations

import bisect
import math
import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from engine.config import Config
from engine.divergence import Alarm
from engine.history import Event, History
from engine.recording import (
    Recording,
    RecordingError,
    RecordingParser,
    first_line_error,
    load_recording,
)

SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, None)
"""The speed ladder ("faster"/"slower"); None is as fast as possible."""
MIN_SPEED, MAX_SPEED = 0.25, 1000.0
ASAP_STEPS_PER_S = 200_000
"""Steps per wall second shown when the speed is None (as fast as possible)."""
CONTROL_FIELDS = ("lr", "reg", "batch_size", "loss", "optimizer", "on_diverge")
CLEARS_ALARM = {("rescue", None), ("resume", None), ("control", "reset")}
"""Events after which the trainer has no active alarm (see Trainer._rescue etc.)."""


class Replayer:
    """Plays a recording back into a :class:`History`.

    States (``state``, what the header shows): ``PLAYING``, ``PAUSED``, ``DIVERGED`` (an
    alarm is active at the position), ``FINISHED`` (at the end of a file that will not
    grow: it closed cleanly, or it is not followed) and ``LIVE`` (following a growing
    file and showing its last step).

    Args:
        path: the recording.
        follow: keep reading lines another process appends; starts at the end.

    Raises:
        RecordingError: the file is not a readable recording.
    """

    kind = "replay"

    def __init__(self, path: str | os.PathLike, *, follow: bool = False) -> None:
        self.path = str(path)
        self.follow = follow
        self.parser = RecordingParser(self.path)
        self._offset = 0  # bytes of the file consumed (complete lines only)
        self._partial = b""  # an incomplete last line, waiting for its newline
        self.torn = False  # not following: the last line was cut short
        self._read_new()
        if self.parser.header is None and self._partial.strip():
            try:  # a header without its newline, or cut short
                self.parser.feed(self._partial)
            except RecordingError:
                raise first_line_error(self.path, self._partial) from None
            self._partial = b""
        if self.parser.header is None:
            raise RecordingError(f"{self.path}: empty file, not a descent recording")
        if not follow and self._partial.strip():
            try:
                self.parser.feed(self._partial)
            except RecordingError:
                self.torn = True
            self._partial = b""
        self.header: dict[str, Any] = self.parser.header
        d = self.header.get("dataset") or {}
        self.dataset_info: dict[str, Any] = d
        self.dataset = SimpleNamespace(**{str(k): v for k, v in d.items()})
        self.parent: dict[str, Any] | None = self.header.get("parent")
        self._base_config = Config.from_dict(self.header.get("config", {}))
        self.history = History()
        self.position = 0  # steps shown (history holds exactly these)
        self._eval_i = 0  # parser.evaluations appended to history
        self._event_i = 0  # parser.events appended to history
        self._clock = 0.0  # playback time in recorded running seconds
        self.speed: float | None = 1.0  # multiple of recorded time; None: as fast as possible
        self.playing = True
        self.notice = ""  # a one-line remark for the UI (e.g. controls are read-only)
        self._cache_key: tuple[int, int] | None = None
        self._cached: tuple[Config, Event | None] = (self._base_config, None)
        self._anchors()
        if follow:
            self.seek(self.total_steps)
        else:
            self._sync()

    # -- reading the file --------------------------------------------------------------
    def _read_new(self) -> bool:
        """Feed newly appended complete lines to the parser; True if any were read."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError as e:
            if self.parser.header is None:
                raise RecordingError(f"{self.path}: cannot read ({e.strerror or e})") from None
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        buf = self._partial + chunk
        lines = buf.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.parser.feed(line)
        return bool(lines)

    def _anchors(self) -> None:
        """Step ↔ running-time anchors: (0, 0) and the end of every steps block."""
        self._anchor_t = np.concatenate(([0.0], self.parser.block_t))
        self._anchor_s = np.concatenate(([0], self.parser.block_end)).astype(np.float64)
        # running time never goes back; guard against odd files
        np.maximum.accumulate(self._anchor_t, out=self._anchor_t)

    @property
    def total_steps(self) -> int:
        """Steps in the file so far."""
        return self.parser.steps

    @property
    def complete(self) -> bool:
        """The recording has its closing summary (the session ended cleanly)."""
        return self.parser.summary is not None

    # -- filling the history ------------------------------------------------------------
    def _sync(self) -> None:
        """Append steps up to ``position`` and evaluations/events at steps <= position."""
        n = self.history.steps
        p = self.position
        if p > n:
            self.history.append_steps(self.parser.data_loss[n:p], self.parser.reg_loss[n:p])
        evals = self.parser.evaluations
        while self._eval_i < len(evals) and evals[self._eval_i].step <= p:
            self.history.append_eval(evals[self._eval_i])
            self._eval_i += 1
        events = self.parser.events
        while self._event_i < len(events) and events[self._event_i].step <= p:
            self.history.append_event(events[self._event_i])
            self._event_i += 1

    def _goto(self, step: int) -> None:
        step = max(0, min(int(step), self.total_steps))
        if step < self.position or step < self.history.steps:
            self.history.truncate(step)
            self._eval_i = bisect.bisect_left([e.step for e in self.parser.evaluations], step)
            self._event_i = bisect.bisect_left([e.step for e in self.parser.events], step)
        self.position = step
        self._sync()

    def _time_of(self, step: float) -> float:
        return float(np.interp(step, self._anchor_s, self._anchor_t))

    def _step_at(self, t: float) -> int:
        return int(math.floor(np.interp(t, self._anchor_t, self._anchor_s) + 1e-9))

    # -- playback -------------------------------------------------------------------------
    def tick(self, dt: float) -> bool:
        """Advance playback by ``dt`` wall seconds; in follow mode read new lines first.

        Returns:
            True when something the UI shows changed (position, data, state).
        """
        changed = False
        if self.follow and self._read_new():
            self._anchors()
            self._sync()  # events at the current step may just have arrived
            changed = True
        if not self.playing or dt <= 0:
            return changed
        end = self.total_steps
        if self.speed is None:
            target = self.position + max(1, int(ASAP_STEPS_PER_S * dt))
            target = min(target, end)
            self._clock = self._time_of(target)
        else:
            self._clock = min(self._clock + dt * self.speed, float(self._anchor_t[-1]))
            target = min(max(self._step_at(self._clock), self.position), end)
        if target != self.position:
            self._goto(target)
            changed = True
        if self.position >= end and not self.follow and self.playing:
            self.playing = False
            changed = True
        return changed

    def seek(self, step: int) -> int:
        """Show exactly ``step`` steps (clamped to the file). Returns the new position."""
        self._goto(step)
        self._clock = self._time_of(self.position)
        return self.position

    def seek_fraction(self, delta: float) -> int:
        """Jump by ``delta`` of the whole recording (+0.01, -0.1, ...)."""
        return self.seek(self.position + int(round(delta * self.total_steps)))

    def next_mark(self, direction: int = 1,
                  kinds: tuple[str, ...] = ("control", "alarm", "rescue")) -> int | None:
        """Seek to the next (or previous) event of one of ``kinds``; None if there is none."""
        steps = sorted({e.step for e in self.parser.events if e.kind in kinds})
        return self._jump(steps, direction)

    def next_eval(self, direction: int = 1) -> int | None:
        """Seek to the next (or previous) evaluation's step; None if there is none."""
        return self._jump(sorted({e.step for e in self.parser.evaluations}), direction)

    def _jump(self, steps: list[int], direction: int) -> int | None:
        p = self.position
        if direction >= 0:
            i = bisect.bisect_right(steps, p)
            target = steps[i] if i < len(steps) else None
        else:
            i = bisect.bisect_left(steps, p)
            target = steps[i - 1] if i > 0 else None
        if target is None or target > self.total_steps:
            return None
        return self.seek(target)

    def send(self, name: str, value: Any = None) -> None:
        """The dashboard's keys, as for a Trainer. Training controls are refused (notice).

        Names: toggle_pause, pause, resume, speed (value: float or None), faster, slower,
        seek (value: step), seek_fraction (value: delta), start, end, next_mark,
        prev_mark, next_eval, prev_eval, step (one evaluation forward), stop.
        """
        self.notice = ""
        if name in ("toggle_pause", "pause", "resume"):
            at_end = self.position >= self.total_steps and not self.follow
            play = (not self.playing) if name == "toggle_pause" else name == "resume"
            if play and at_end:
                self.seek(0)  # play again from the start
            self.playing = play
        elif name == "speed":
            self.speed = None if value is None else min(MAX_SPEED, max(MIN_SPEED, float(value)))
        elif name in ("faster", "slower"):
            i = SPEEDS.index(self.speed) if self.speed in SPEEDS else 2
            i = min(len(SPEEDS) - 1, i + 1) if name == "faster" else max(0, i - 1)
            self.speed = SPEEDS[i]
        elif name == "seek":
            self.seek(int(value))
        elif name == "seek_fraction":
            self.seek_fraction(float(value))
        elif name == "start":
            self.seek(0)
        elif name == "end":
            self.seek(self.total_steps)
        elif name in ("next_mark", "prev_mark"):
            self.next_mark(1 if name == "next_mark" else -1)
        elif name in ("next_eval", "step", "prev_eval"):
            self.next_eval(-1 if name == "prev_eval" else 1)
        elif name == "stop":
            self.playing = False
        else:
            self.notice = f"replay is read-only: {name} cannot be changed (fork to try it)"

    def close(self) -> None:
        """Nothing to release (the file is opened per read); kept for the session API."""
        self.playing = False

    # -- what the dashboard shows ---------------------------------------------------------
    @property
    def step(self) -> int:
        return self.position

    @property
    def elapsed(self) -> float:
        """Recorded running seconds at the position."""
        return self._time_of(self.position)

    def _derived(self) -> tuple[Config, Event | None]:
        """Config and active alarm at the position, from the events shown (cached)."""
        key = (self.position, self._event_i)
        if key == self._cache_key:
            return self._cached
        cfg = self._base_config
        alarm: Event | None = None
        for e in self.parser.events[: self._event_i]:
            if e.kind == "control" and e.name in CONTROL_FIELDS:
                cfg = cfg.replace(**{e.name: e.value})
            elif e.kind == "rescue" and e.value is not None:
                cfg = cfg.replace(lr=e.value)
            if e.kind == "alarm":
                alarm = e
            elif (e.kind, None) in CLEARS_ALARM or (e.kind, e.name) in CLEARS_ALARM:
                alarm = None
        self._cache_key, self._cached = key, (cfg, alarm)
        return self._cached

    @property
    def config(self) -> Config:
        """The settings in force at the position (header config + controls + rescues)."""
        return self._derived()[0]

    @property
    def alarm(self) -> Alarm | None:
        """The alarm active at the position (as the trainer's ``Alarm``), or None."""
        e = self._derived()[1]
        if e is None:
            return None
        loss = e.value if isinstance(e.value, (int, float)) else math.nan
        return Alarm(step=e.step, rule=e.name, level="alarm", loss=float(loss), detail=e.detail)

    @property
    def state(self) -> str:
        at_end = self.position >= self.total_steps
        if self.alarm is not None:
            return "DIVERGED"
        if at_end and (self.complete or not self.follow):
            return "FINISHED"
        if at_end:
            return "LIVE"
        return "PLAYING" if self.playing else "PAUSED"

    @property
    def epoch(self) -> float:
        """Samples seen by the position / training rows (batch size changes honoured)."""
        n_train = self.dataset_info.get("num_train")
        if not isinstance(n_train, int) or n_train <= 0:
            return 0.0
        cfg = self._base_config
        samples, last = 0, 0
        for e in self.parser.events[: self._event_i]:
            if e.kind == "control" and e.name in ("batch_size", "optimizer"):
                samples += (e.step - last) * _batch(cfg, n_train)
                last = e.step
                cfg = cfg.replace(**{e.name: e.value})
        samples += (self.position - last) * _batch(cfg, n_train)
        return samples / n_train

    @property
    def steps_per_s(self) -> float:
        """The recorded rate around the position (steps per running second)."""
        s, t = self._anchor_s, self._anchor_t
        if s.shape[0] < 2:
            return 0.0
        i = int(np.searchsorted(s, self.position, side="left"))
        i = min(max(i, 1), s.shape[0] - 1)
        dt = t[i] - t[i - 1]
        return float((s[i] - s[i - 1]) / dt) if dt > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The recorded closing summary, or one computed from the file so far."""
        if self.parser.summary is not None:
            return dict(self.parser.summary)
        return _summary_from(self.parser.snapshot())

    def parent_history(self) -> tuple[History, int] | None:
        """The parent run's curves for overlay, when this recording is a fork.

        Returns:
            (History of the whole parent recording, fork step), or None when this is not
            a fork or the parent file cannot be read (moved, deleted).
        """
        if not self.parent:
            return None
        path = resolve_parent(self.path, self.parent["path"])
        try:
            rec = load_recording(path)
        except RecordingError:
            return None
        return history_of(rec), int(self.parent["step"])


def _batch(cfg: Config, n_train: int) -> int:
    full = cfg.optimizer == "gd" or (cfg.optimizer == "sgd" and cfg.batch_size >= n_train)
    return n_train if full else cfg.batch_size


def resolve_parent(path: str, parent_path: str) -> str:
    """A parent path as stored, else next to the fork's file (recordings move together)."""
    if os.path.exists(parent_path):
        return parent_path
    beside = os.path.join(os.path.dirname(path), os.path.basename(parent_path))
    return beside if os.path.exists(beside) else parent_path


def history_of(rec: Recording) -> History:
    """A History holding a whole recording (steps, evaluations, events)."""
    h = History()
    h.append_steps(rec.data_loss, rec.reg_loss)
    for ev in rec.evaluations:
        h.append_eval(ev)
    for e in rec.events:
        h.append_event(e)
    return h


def _summary_from(rec: Recording) -> dict[str, Any]:
    last = rec.evaluations[-1] if rec.evaluations else None
    kinds = [e.kind for e in rec.events]
    t = float(rec.block_t[-1]) if rec.block_t.size else 0.0
    return {
        "steps": rec.steps,
        "loss": float(rec.loss[-1]) if rec.steps else None,
        "train_acc": last.train_acc if last else None,
        "val_acc": last.val_acc if last else None,
        "val_loss": last.val_loss if last else None,
        "steps_per_s": rec.steps / t if t > 0 else 0.0,
        "diverged": None,
        "alarms": kinds.count("alarm"),
        "warnings": kinds.count("warning"),
        "rescues": kinds.count("rescue"),
    }


def replay_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What ``descent replay FILE --headless`` prints: one flat dict.

    Raises:
        RecordingError: the file is not a readable recording.
    """
    rec = load_recording(path)
    out: dict[str, Any] = {"file": str(path)}
    out.update(_summary_from(rec))
    if rec.summary is not None:
        out.update({k: v for k, v in rec.summary.items() if k != "t"})
    ds = rec.header.get("dataset") or {}
    out["dataset"] = ds.get("spec", rec.config.get("data"))
    out["recording"] = str(path)  # the live summary was written before the path was known
    out["complete"] = rec.complete
    out["torn"] = rec.torn
    out["controls"] = sum(e.kind == "control" for e in rec.events)
    out["evaluations"] = len(rec.evaluations)
    out["recorded_seconds"] = float(rec.block_t[-1]) if rec.block_t.size else 0.0
    out["created"] = rec.header.get("created")
    if rec.parent:
        out["parent"] = f"{rec.parent['path']} at step {rec.parent['step']}"
    if rec.notes:
        out["notes"] = "; ".join(rec.notes)
    return out
