"""The real ``descent`` in a pseudo-terminal: it draws, takes keys, quits cleanly.

Bounded waits only: every read loop has a deadline, and the test fails (after killing
the child) instead of hanging.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest

from tui.pty_terminal import Terminal

ROOT = Path(__file__).resolve().parents[1]
DESCENT = Path(sys.executable).with_name("descent")
START_SECONDS = 90.0
"""Bound on start-up (a cold Numba cache compiles the kernels)."""
QUIT_SECONDS = 15.0
"""Bound on quitting."""


def _quit_with_q(term: Terminal) -> None:
    """Press q: the process exits 0 within QUIT_SECONDS, leaving the alternate screen, with
    no traceback."""
    term.send("q")
    status = term.wait(QUIT_SECONDS)
    assert status == 0, (status, term.output[-2000:])
    tail = term.output[term.output.rfind(b"\x1b[?1049h"):]
    assert b"\x1b[?1049l" in tail, "the alternate screen was not left"
    assert b"Traceback" not in term.output


@pytest.mark.skipif(not DESCENT.exists() and shutil.which("descent") is None,
                    reason="descent is not installed in this environment")
def test_descent_runs_in_a_terminal_takes_keys_and_quits_with_status_0():
    exe = str(DESCENT) if DESCENT.exists() else str(shutil.which("descent"))
    term = Terminal([exe, "train", "--data", "blobs", "--no-record"], cwd=ROOT)
    try:
        assert term.read_until(b"\x1b[?1049h", START_SECONDS), "no alternate screen"
        assert term.read_until(b"controls", START_SECONDS), term.output[-2000:]
        assert term.read_until(b"RUNNING", 60.0), "the header never said RUNNING"
        term.send(" ")  # pause
        assert term.read_until(b"PAUSED", 60.0), "space did not pause"
        term.send("+")  # lr ×2: the blobs default lr for softmax is 0.5
        assert term.read_until(b"1.00e+00", 60.0), "+ did not show the new lr"
        _quit_with_q(term)
    finally:
        term.kill()


def _after_the_screen(term: Terminal) -> str:
    """What the process printed once it had left the alternate screen."""
    out = term.output
    return out[out.rfind(b"\x1b[?1049l"):].decode(errors="replace").replace("\r", "")


@pytest.mark.skipif(not DESCENT.exists() and shutil.which("descent") is None,
                    reason="descent is not installed in this environment")
def test_after_q_the_terminal_says_where_the_recording_is(tmp_path):
    """The alternate screen takes the dashboard with it: the line left behind names the
    recording and its steps, all of them on disk."""
    from engine.recording import load_recording

    exe = str(DESCENT) if DESCENT.exists() else str(shutil.which("descent"))
    rec = tmp_path / "run.jsonl"
    term = Terminal([exe, "train", "--data", "blobs", "--record", str(rec)], cwd=ROOT)
    try:
        assert term.read_until(b"RUNNING", START_SECONDS), term.output[-2000:]
        _quit_with_q(term)
    finally:
        term.kill()
    steps = load_recording(rec).steps
    assert steps > 0
    assert f"descent: recording: {rec} ({steps} steps)\n" in _after_the_screen(term)


@pytest.mark.skipif(not DESCENT.exists() and shutil.which("descent") is None,
                    reason="descent is not installed in this environment")
def test_an_error_shown_on_the_screen_is_still_on_the_terminal_after_it(tmp_path):
    """A missing dataset stops the session on an error screen; pressing q must not take
    the only explanation away with the screen."""
    exe = str(DESCENT) if DESCENT.exists() else str(shutil.which("descent"))
    term = Terminal([exe, "train", "--data", f"cifar10:{tmp_path / 'nope'}"], cwd=ROOT)
    try:
        assert term.read_until(b"stopped", START_SECONDS), term.output[-2000:]
        term.send("q")
        assert term.wait(QUIT_SECONDS) == 2, term.output[-2000:]
    finally:
        term.kill()
    after = _after_the_screen(term).replace("\n", "")  # the terminal wraps the long line
    assert f"descent: error: cifar10: {tmp_path / 'nope'} does not exist" in after
    assert "recording" not in after  # the session never started: nothing was recorded


@pytest.mark.skipif(not DESCENT.exists() and shutil.which("descent") is None,
                    reason="descent is not installed in this environment")
@pytest.mark.parametrize("how", ["SIGTERM", "hang-up"])
def test_sigterm_or_a_dropped_link_ends_the_dashboard_with_its_recording_closed(tmp_path, how):
    """A SIGTERM, or the terminal going away (SIGHUP, as when an SSH link drops), stops
    training and closes the recording: every step is in it and its summary says why."""
    from engine.recording import load_recording

    exe = str(DESCENT) if DESCENT.exists() else str(shutil.which("descent"))
    rec = tmp_path / "run.jsonl"
    term = Terminal([exe, "train", "--data", "blobs", "--record", str(rec)], cwd=ROOT,
                    controlling=True)
    try:
        assert term.read_until(b"RUNNING", START_SECONDS), term.output[-2000:]
        if how == "SIGTERM":
            term.proc.send_signal(signal.SIGTERM)
            want_status, want_reason = 128 + signal.SIGTERM, "SIGTERM"
        else:
            term.hang_up()
            want_status, want_reason = 128 + signal.SIGHUP, "SIGHUP"
        status = term.wait(QUIT_SECONDS)
        assert status == want_status, (status, term.output[-2000:])
        assert b"Traceback" not in term.output
    finally:
        term.kill()
    r = load_recording(rec)
    assert not r.torn and r.summary is not None, r.notes
    assert r.summary.get("ended_by") == want_reason and r.summary["steps"] == r.steps


@pytest.mark.skipif(not DESCENT.exists() and shutil.which("descent") is None,
                    reason="descent is not installed in this environment")
def test_q_during_a_cold_compile_quits_without_waiting_for_it(tmp_path, monkeypatch):
    """A Numba compile cannot be interrupted, and a cold one takes half a minute: q must
    not wait for it (it did, behind 'quitting once loading ends'). The child gets an
    empty cache; QUIT_SECONDS is well under the compile's time."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cold"))
    exe = str(DESCENT) if DESCENT.exists() else str(shutil.which("descent"))
    term = Terminal([exe, "train", "--data", "blobs", "--no-record"], cwd=ROOT)
    try:
        assert term.read_until(b"compiling kernels", START_SECONDS), term.output[-2000:]
        _quit_with_q(term)
    finally:
        term.kill()
