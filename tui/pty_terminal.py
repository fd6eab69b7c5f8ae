"""A child process on a pseudo-terminal, for the pty test and the start-up benchmark.

Every read has a deadline: a caller waits a bounded time and never hangs on a child that
stopped drawing. Output is drained while waiting, so the child never blocks on a full pty.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path


def _take_terminal() -> None:
    """In the child, after setsid(): make the pty (its stdin) the session's controlling
    terminal, as a login over SSH has it, so closing our end sends it SIGHUP."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A child process on a pty of ``cols``×``rows``, with everything it wrote collected."""

    def __init__(self, argv: list[str], cols: int = 100, rows: int = 30,
                 cwd: str | Path | None = None, *, controlling: bool = False) -> None:
        """``controlling``: make the pty the child's controlling terminal (as an SSH login
        has it), so that :meth:`hang_up` sends it SIGHUP. It runs a function in the child
        between fork and exec, which Python warns against in a process with threads, so
        only the test of a dropped link asks for it."""
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols),
               "LINES": str(rows)}
        env.pop("NO_COLOR", None)
        self.started = time.monotonic()
        """When the child was started (time.monotonic())."""
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     cwd=cwd, env=env, start_new_session=True,
                                     preexec_fn=_take_terminal if controlling else None)
        os.close(slave)
        self.output = b""

    def read_until(self, needle: bytes, seconds: float) -> bool:
        """Collect output until ``needle`` appears (True) or the deadline passes."""
        deadline = time.monotonic() + seconds
        while self.master >= 0 and needle not in self.output and time.monotonic() < deadline:
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
        """The child's exit status, or None if it is still running after ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.master >= 0:
                self.read_until(b"\x00never", 0.1)  # keep draining: the child never blocks
            else:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                return self.proc.returncode
        return None

    def hang_up(self) -> None:
        """Close the terminal's end, as a dropped SSH link does: a child started with
        ``controlling=True`` gets SIGHUP."""
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.hang_up()
