"""The real ``descent`` in a pseudo-terminal: it draws, takes keys, quits cleanly.

Bounded waits only: every read loop has a deadline, and the test fails (after killing
the child) instead of hanging.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESCENT = Path(sys.executable).with_name("descent")
START_SECONDS = 90.0
"""Bound on start-up (a cold Numba cache compiles the kernels)."""
QUIT_SECONDS = 15.0
"""Bound on quitting."""


class Terminal:
    """A child process on a pty, with everything it wrote collected."""

    def __init__(self, argv: list[str], cols: int = 100, rows: int = 30) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols),
               "LINES": str(rows)}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     cwd=ROOT, env=env, start_new_session=True)
        os.close(slave)
        self.output = b""

    def read_until(self, needle: bytes, seconds: float) -> bool:
        """Collect output until ``needle`` appears (True) or the deadline passes."""
        deadline = time.monotonic() + seconds
        while needle not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the pty
                    break
                if not chunk:
                    break
                self.output += chunk
        return needle in self.output

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, seconds: float) -> int | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.read_until(b"\x00never", 0.1)  # keep draining so the child never blocks
            if self.proc.poll() is not None:
                return self.proc.returncode
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        os.close(self.master)


@pytest.mark.skipif(not DESCENT.exists() and shutil.which("descent") is None,
                    reason="descent is not installed in this environment")
def test_descent_runs_in_a_terminal_takes_keys_and_quits_with_status_0():
    exe = str(DESCENT) if DESCENT.exists() else str(shutil.which("descent"))
    term = Terminal([exe, "train", "--data", "blobs", "--no-record"])
    try:
        assert term.read_until(b"\x1b[?1049h", START_SECONDS), "no alternate screen"
        assert term.read_until(b"controls", START_SECONDS), term.output[-2000:]
        assert term.read_until(b"RUNNING", 60.0), "the header never said RUNNING"
        term.send(" ")  # pause
        assert term.read_until(b"PAUSED", 60.0), "space did not pause"
        term.send("+")  # lr ×2: the blobs default lr for softmax is 0.5
        assert term.read_until(b"1.00e+00", 60.0), "+ did not show the new lr"
        term.send("q")
        status = term.wait(QUIT_SECONDS)
        assert status == 0, (status, term.output[-2000:])
        tail = term.output[term.output.rfind(b"\x1b[?1049h"):]
        assert b"\x1b[?1049l" in tail, "the alternate screen was not left"
        assert b"Traceback" not in term.output
    finally:
        term.kill()
