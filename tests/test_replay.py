"""Replay: the playback position, seeking, marks, derived settings and follow mode."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.config import Config
from engine.history import Evaluation, Event
from engine.recording import Recorder, RecordingError
from engine.replay import Replayer, replay_summary

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "recordings" / "example.jsonl"


class FakeDataset:
    def describe(self) -> dict:
        return {"spec": "fake", "num_train": 1000, "num_val": 10, "fingerprint": "f00d"}


def make(path: Path, steps: int = 5000, chunk: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """A recording with controls at 1000 (lr) and 2500 (batch), an alarm and a rescue at 3000."""
    rng = np.random.default_rng(1)
    data, reg = rng.random(steps), rng.random(steps) * 1e-2
    rec = Recorder(path, Config(lr=1e-2, reg=1e-4, batch_size=100), FakeDataset())
    for s in range(0, steps, chunk):
        if s % 500 == 0:
            rec.on_eval(Evaluation(s, s / steps, s / steps / 2, 1.0, 1.0))
        if s == 1000:
            rec.on_event(Event(s, "control", "lr", 5e-3, 1e-2, "lr"))
        if s == 2500:
            rec.on_event(Event(s, "control", "batch_size", 200, 100, "batch"))
        if s == 3000:
            rec.on_event(Event(s, "alarm", "above_start", math.inf, None, "loss blew up"))
            rec.on_event(Event(s, "pause", "diverged", detail="paused"))
        if s == 3500:
            rec.on_event(Event(s, "rescue", "rescue", 5e-4, 5e-3, "restored"))
        rec.on_steps(s, data[s:s + chunk], reg[s:s + chunk])
    rec.close({"steps": steps, "loss": float(data[-1] + reg[-1])})
    return data, reg


@pytest.fixture()
def rec_path(tmp_path) -> Path:
    p = tmp_path / "r.jsonl"
    make(p)
    return p


def test_seek_lands_exactly_on_the_step(rec_path):
    r = Replayer(rec_path)
    assert r.kind == "replay" and r.position == 0 and r.total_steps == 5000
    data, reg = make(rec_path.parent / "same.jsonl")
    for target in (1234, 4999, 17, 3000, 0, 5000, 2999, 6000, -5):
        got = r.seek(target)
        want = min(max(target, 0), 5000)
        assert got == want == r.position == r.step == r.history.steps
        snap = r.history.snapshot()
        np.testing.assert_array_equal(snap.data_loss, data[:want])
        np.testing.assert_array_equal(snap.loss, data[:want] + reg[:want])
        assert all(e.step <= want for e in snap.events)
        assert list(snap.eval_step) == [s for s in range(0, 5000, 500) if s <= want]
    r.seek(2000)
    assert r.seek_fraction(+0.1) == 2500
    assert r.seek_fraction(-0.01) == 2450


def test_config_and_alarm_follow_the_position(rec_path):
    r = Replayer(rec_path)
    r.seek(999)
    assert r.config.lr == 1e-2 and r.config.batch_size == 100 and r.alarm is None
    r.seek(1000)  # the control took effect before step 1000 ran: shown at 1000
    assert r.config.lr == 5e-3
    r.seek(3200)
    assert r.alarm is not None and r.alarm.rule == "above_start" and r.alarm.step == 3000
    assert r.state == "DIVERGED" and r.config.batch_size == 200
    r.seek(3500)
    assert r.alarm is None and r.config.lr == 5e-4 and r.state in ("PLAYING", "PAUSED")
    r.seek(2000)  # seeking back undoes them
    assert r.config.lr == 5e-3 and r.config.batch_size == 100 and r.alarm is None
    # epoch: 2500 steps at batch 100 then 500 at 200, over 1000 rows
    r.seek(3000)
    assert r.epoch == pytest.approx((2500 * 100 + 500 * 200) / 1000)


def test_marks_and_evaluations(rec_path):
    r = Replayer(rec_path)
    assert r.next_mark() == 1000
    assert r.next_mark() == 2500
    assert r.next_mark() == 3000
    assert r.next_mark() == 3500
    assert r.next_mark() is None and r.position == 3500
    assert r.next_mark(-1) == 3000
    assert r.next_mark(-1, kinds=("control",)) == 2500
    assert r.next_eval() == 3000
    assert r.next_eval() == 3500
    assert r.next_eval(-1) == 3000
    r.seek(0)
    assert r.next_eval(-1) is None and r.position == 0


def test_playback_follows_recorded_time(rec_path):
    r = Replayer(rec_path)
    r.send("speed", None)  # as fast as possible
    assert r.tick(0.01) and r.position > 0
    while r.tick(0.1):
        pass
    assert r.position == 5000 and r.state == "FINISHED" and not r.playing
    r.send("toggle_pause")  # play again from the start
    assert r.playing and r.position == 0
    r.send("speed", 1e9)
    assert r.speed == 1000.0
    r.send("speed", 0.001)
    assert r.speed == 0.25
    r.send("faster")
    assert r.speed == 0.5
    r.send("lr", 1.0)
    assert "read-only" in r.notice
    r.send("pause")
    assert not r.tick(1.0) and r.state == "PAUSED"


def test_playback_speed_uses_timestamps(tmp_path):
    """Blocks stamped 1 s apart: at 2x, one wall second shows two blocks."""
    p = tmp_path / "t.jsonl"
    header = {"format": "descent-recording", "version": 1, "config": {}, "dataset": {},
              "parent": None}
    lines = [json.dumps(header)]
    for k in range(10):
        lines.append(json.dumps({"type": "steps", "start": 100 * k, "data": [1.0] * 100,
                                 "reg": [0.0] * 100, "t": float(k + 1)}))
    p.write_text("\n".join(lines) + "\n")
    r = Replayer(p)
    r.send("speed", 2.0)
    r.tick(1.0)
    assert r.position == 200
    r.tick(0.25)
    assert r.position == 250
    assert r.steps_per_s == pytest.approx(100.0)


def test_follow_mode_picks_up_appended_lines(tmp_path):
    """Another process appends lines (with a partial last line in between)."""
    p = tmp_path / "live.jsonl"
    header = {"format": "descent-recording", "version": 1, "config": {}, "dataset": {},
              "parent": None}
    p.write_text(json.dumps(header) + "\n")
    r = Replayer(p, follow=True)
    assert r.total_steps == 0 and r.state == "LIVE"
    script = (
        "import json, sys, time\n"
        "f = open(sys.argv[1], 'a')\n"
        "for k in range(5):\n"
        "    line = json.dumps({'type': 'steps', 'start': 10 * k, 'data': [1.5] * 10,"
        " 'reg': [0.5] * 10, 't': k + 1.0}) + '\\n'\n"
        "    f.write(line[:7]); f.flush(); time.sleep(0.05)\n"
        "    f.write(line[7:]); f.flush()\n"
        "f.write(json.dumps({'type': 'summary', 'steps': 50}) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(p)], timeout=30)
    assert proc.returncode == 0
    deadline = time.monotonic() + 10
    while r.total_steps < 50 and time.monotonic() < deadline:
        r.tick(0.05)
    assert r.total_steps == 50 and r.complete
    r.send("speed", None)
    for _ in range(100):
        r.tick(0.1)
    assert r.position == 50 and r.state == "FINISHED"
    np.testing.assert_array_equal(r.history.snapshot().loss, np.full(50, 2.0))


def test_follow_mode_while_a_recorder_writes(tmp_path):
    """Lines written by a Recorder in another thread appear in a follower (bounded polling)."""
    p = tmp_path / "live.jsonl"
    rec = Recorder(p, Config(), FakeDataset())
    r = Replayer(p, follow=True)
    rec.on_steps(0, np.ones(30), np.zeros(30))
    rec.on_event(Event(30, "control", "lr", 1e-4, 1e-3))
    deadline = time.monotonic() + 10
    while r.history.steps < 30 or not r.history.snapshot().events:
        assert time.monotonic() < deadline, "follower saw nothing"
        r.tick(0.05)
        time.sleep(0.02)
    assert r.state == "LIVE" and r.config.lr == 1e-4
    rec.close({"steps": 30})


def test_replay_summary_and_errors(rec_path, tmp_path):
    s = replay_summary(rec_path)
    assert s["steps"] == 5000 and s["complete"] and s["controls"] == 2
    assert s["alarms"] == 1 and s["rescues"] == 1 and s["evaluations"] == 10
    json.dumps(s)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    with pytest.raises(RecordingError):
        Replayer(bad)
    with pytest.raises(RecordingError):
        Replayer(tmp_path / "missing.jsonl")


def test_seeking_a_million_steps_lands_exactly(tmp_path):
    p = tmp_path / "big.jsonl"
    rec = Recorder(p, Config(), FakeDataset())
    ones = np.ones(10_000)
    for s in range(0, 1_000_000, 10_000):
        rec.on_steps(s, ones, ones)
    rec.close({})
    r = Replayer(p)
    for target in (1_000_000, 10, 999_999, 500_000, 0, 1_000_000):
        assert r.seek(target) == target == r.history.steps


def test_example_replays():
    r = Replayer(EXAMPLE)
    kinds = {e.kind for e in r.parser.events}
    assert {"control", "alarm", "rescue"} <= kinds
    r.seek(r.total_steps)
    assert r.state == "FINISHED" and r.complete
    marks = []
    r.seek(0)
    while (m := r.next_mark()) is not None:
        marks.append(m)
    assert len(marks) >= 3


def test_parent_history_for_a_fork(rec_path, tmp_path):
    child = tmp_path / "child.jsonl"
    rec = Recorder(child, Config(), FakeDataset(), parent={"path": str(rec_path), "step": 1000})
    rec.on_steps(0, np.ones(10), np.zeros(10))
    rec.close({})
    r = Replayer(child)
    h, at = r.parent_history()
    assert at == 1000 and h.steps == 5000
    assert Replayer(rec_path).parent_history() is None
