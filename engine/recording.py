"""Recording a session to JSON Lines, and reading it back safely.

Format (``descent-recording`` version 1, described fully in ``recordings/README.md``):
line 1 is a header object; then, in step order, objects with a ``"type"``: ``steps``
(a block of consecutive steps: data and regularization loss per step), ``eval``,
``event`` and finally ``summary``. Floats are written with Python's shortest round-trip
``repr``, so reading gives back the very same float64 bits; NaN and ±inf, which plain
JSON cannot hold, are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``.

Writing: :class:`Recorder` is a trainer observer. The trainer thread only copies arrays
and puts them on a queue; a background thread merges consecutive step chunks into one
line, serializes, writes and flushes every ``FLUSH_INTERVAL`` seconds. A write error
(disk full, unwritable path) never stops training: the recorder goes into a failed
state with a one-line ``error`` and drops the rest.

Reading: :func:`load_recording` parses with ``json`` only (nothing in a file is ever
executed), checks the header, version and step continuity, accepts a torn last line
(``Recording.torn``) and rejects anything else malformed with :class:`RecordingError`
naming the line.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from engine.history import Evaluation, Event

FORMAT = "descent-recording"
"""The header's ``format`` value: how a reader knows the file is a recording."""
VERSION = 1
"""The format version this module writes and the newest it reads."""
FLUSH_INTERVAL = 0.25
"""Seconds between writes to disk; a ``kill -9`` loses at most this much (plus one write)."""
MAX_BLOCK_STEPS = 4096
"""Most steps merged into one ``steps`` line (keeps lines short for followers)."""
NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
"""How NaN and ±inf are spelled in a recording (plain JSON has no such numbers)."""
_SAFE_STR = {math.inf: "inf", -math.inf: "-inf"}


def unique_path(path: Path) -> Path:
    """``path``, or ``stem-2.jsonl``, ``stem-3.jsonl``, ... if it exists: never overwrite."""
    path = Path(path)
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


class RecordingError(ValueError):
    """A file is not a readable recording; the message is one line naming the line number."""


def first_line_error(path: str, first: bytes) -> RecordingError:
    """The error for a file whose only content is ``first``, a line without its newline
    that is not a whole header: a recording cut short while its header was being written
    says so; anything else is not a recording."""
    if first.lstrip().startswith(b'{"format":"%s"' % FORMAT.encode()):
        return RecordingError(f"{path}: the header line is cut short ({len(first)} bytes, "
                              "no newline): the session ended before its first line was "
                              "written, so it holds no run")
    return RecordingError(f"{path}: not a descent recording (line 1 is not a "
                          f"'{FORMAT}' header)")


# -- encoding -------------------------------------------------------------------------
def _enc(x: Any) -> Any:
    """Make a value plain-JSON safe: non-finite floats become strings, numpy scalars plain."""
    if isinstance(x, float):
        if math.isfinite(x):
            return x
        return "nan" if math.isnan(x) else _SAFE_STR[x]
    if isinstance(x, np.generic):
        return _enc(x.item())
    if isinstance(x, dict):
        return {str(k): _enc(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_enc(v) for v in x]
    if isinstance(x, np.ndarray):
        return _enc(x.tolist())
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


def _enc_array(a: np.ndarray) -> list:
    """A float array as a JSON-ready list, non-finite values as strings (fast when finite)."""
    if np.isfinite(a).all():
        return a.tolist()
    return [_enc(v) for v in a.tolist()]


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def _dec_num(x: Any, what: str) -> float:
    """A recorded number (or its non-finite spelling) as a float; ValueError otherwise."""
    if isinstance(x, str):
        if x in NONFINITE:
            return NONFINITE[x]
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    raise ValueError(f"{what} is not a number: {str(x)[:40]!r}")


def _dec_value(x: Any) -> Any:
    return NONFINITE[x] if isinstance(x, str) and x in NONFINITE else x


def versions() -> dict[str, str]:
    """Versions of descent, numpy, numba and python and the kernels' build (see
    :func:`engine.kernels.build`), for the header."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from importlib.metadata import version

        out["descent"] = version("descent")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        out["descent"] = "unknown"
    try:
        import numba

        out["numba"] = numba.__version__
    except Exception:  # noqa: BLE001
        out["numba"] = "unknown"
    from engine.kernels import build

    out["kernels"] = build()
    return out


# -- writing --------------------------------------------------------------------------
class Recorder:
    """Writes a session to ``path`` as it runs; a :class:`TrainerObserver`.

    The file is created (and the header written) at construction, so a bad path is known
    before training starts. Observer calls are cheap and never block; a background
    thread does the serializing and writing. Never raises for I/O problems: check
    :attr:`error` (a one-line reason, or None) and :meth:`status_line`.

    Args:
        path: where to write (parent directories are created).
        config: the run's resolved ``engine.config.Config``.
        dataset: the loaded dataset; its ``describe()`` dict goes into the header.
        parent: ``{"path": ..., "step": k}`` when this run is a fork, else None.
    """

    def __init__(self, path: str | os.PathLike, config: Any, dataset: Any, *,
                 parent: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.error: str | None = None  # one-line reason once the recorder has failed
        self.steps_written = 0  # steps on disk so far (after the last flush)
        self.closed = False  # True after close(); later calls are ignored
        self.warned = False  # the UI sets this after showing the error once
        self.end_reason = ""  # set by the CLI on SIGHUP/SIGTERM/Ctrl-C: goes into the summary
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._t0 = time.perf_counter()
        self._active = 0.0  # seconds spent running steps, pauses excluded
        self._last = self._t0  # time of the last activity (steps or event)
        self._file = None
        self._closing = threading.Event()
        describe = dataset.describe() if hasattr(dataset, "describe") else {}
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self.header = {
            "format": FORMAT,
            "version": VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": cfg,
            "seed": cfg.get("seed"),
            "dataset": describe,
            "versions": versions(),
            "parent": parent,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
            self._file.write(_dumps(_enc(self.header)) + "\n")
            self._file.flush()
        except OSError as e:
            self._fail(e)
        self._thread = threading.Thread(target=self._writer, name="descent-recorder",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- observer protocol (trainer thread: quick, never blocks) --------------------
    def on_start(self, trainer: Any) -> None:
        self._last = time.perf_counter()

    def on_steps(self, start: int, data_loss: np.ndarray, reg_loss: np.ndarray) -> None:
        now = time.perf_counter()
        self._active += now - self._last
        self._last = now
        self._queue.put(("steps", int(start), np.array(data_loss, dtype=np.float64),
                         np.array(reg_loss, dtype=np.float64), self._active))

    def on_eval(self, ev: Evaluation) -> None:
        self._queue.put(("eval", ev, self._active))

    def on_event(self, ev: Event) -> None:
        self._last = time.perf_counter()  # a resume or step ends an idle gap
        self._queue.put(("event", ev, self._active))

    def on_close(self, summary: dict[str, Any]) -> None:
        self.close(summary)

    def write_prefix(self, rec: Recording, at: int) -> None:
        """Copy a parent's first ``at`` steps, and its evaluations and events before
        ``at``, into this recording (a fork starts with its parent's history).

        Call before the trainer's first chunk; running time continues from the parent's.
        """
        anchor_s = np.concatenate(([0], rec.block_end)).astype(np.float64)
        anchor_t = np.concatenate(([0.0], rec.block_t))

        def t_of(step: int) -> float:
            return float(np.interp(step, anchor_s, anchor_t))

        marks = sorted(
            [(e.step, 0, i) for i, e in enumerate(rec.events) if e.step < at]
            + [(e.step, 1, i) for i, e in enumerate(rec.evaluations) if e.step < at]
        )
        pos = 0
        for step, is_eval, i in marks:
            if step > pos:
                self._queue.put(("steps", pos, rec.data_loss[pos:step].copy(),
                                 rec.reg_loss[pos:step].copy(), t_of(step)))
                pos = step
            if is_eval:
                self._queue.put(("eval", rec.evaluations[i], t_of(step)))
            else:
                self._queue.put(("event", rec.events[i], rec.event_t[i]))
        if at > pos:
            self._queue.put(("steps", pos, rec.data_loss[pos:at].copy(),
                             rec.reg_loss[pos:at].copy(), t_of(at)))
        self._active = t_of(at)
        self._last = time.perf_counter()

    # -- lifecycle ------------------------------------------------------------------
    def close(self, summary: dict[str, Any] | None = None, *, reason: str = "") -> None:
        """Write everything pending and the summary line (if given), then close the file.

        Safe to call twice, from any thread, and from a signal handler's code path.

        Args:
            summary: the trainer's summary dict; None writes no summary line (the file
                stays readable, it just says the session did not end cleanly).
            reason: why the session ended early ("SIGHUP", "interrupted"); stored in
                the summary when given.
        """
        if self.closed:
            return
        self.closed = True
        reason = reason or self.end_reason
        if summary is not None or reason:
            s = dict(summary or {})
            if reason:
                s["ended_by"] = reason
            self._queue.put(("summary", s, self._active))
        self._closing.set()
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        atexit.unregister(self.close)

    @property
    def ok(self) -> bool:
        return self.error is None

    def status_line(self) -> str:
        """One line for the end of a run: where the recording is, or why it failed."""
        if self.error is None:
            return f"recording: {self.path} ({self.steps_written} steps)"
        return (f"recording FAILED: {self.error}; {self.path} holds the first "
                f"{self.steps_written} steps at most")

    # -- background writer ----------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        if self.error is None:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.error = f"cannot write {self.path}: {msg}"
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None

    def _writer(self) -> None:
        done = False
        last = time.monotonic()
        while not done:
            items = []
            try:
                items.append(self._queue.get(timeout=FLUSH_INTERVAL))
                # Batch by time, not by item: waking for every chunk (~50 a second) would
                # pre-empt a kernel thread each time, and each step's threads wait for each
                # other. So sleep out the rest of the interval, then write it all at once.
                rest = FLUSH_INTERVAL - (time.monotonic() - last)
                if items[0] is not None and rest > 0:
                    time.sleep(rest)
                while True:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            if any(it is None for it in items):
                done = True
                items = [it for it in items if it is not None]
            if not items or self._file is None:
                continue
            try:
                lines, n = self._serialize(items)
                self._file.write("".join(lines))
                self._file.flush()
                last = time.monotonic()
                self.steps_written += n
            except (OSError, ValueError) as e:
                self._fail(e)
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                self._fail(e)

    def _serialize(self, items: list) -> tuple[list[str], int]:
        """Turn queued items into lines, merging runs of contiguous step chunks."""
        lines: list[str] = []
        run: list = []  # pending step chunks to merge
        total = 0

        def flush_run() -> None:
            nonlocal total
            i = 0
            while i < len(run):
                j, n = i, 0
                while j < len(run) and n < MAX_BLOCK_STEPS:
                    n += len(run[j][2])
                    j += 1
                part = run[i:j]
                data = np.concatenate([c[2] for c in part])
                reg = np.concatenate([c[3] for c in part])
                lines.append(_dumps({
                    "type": "steps", "start": part[0][1], "data": _enc_array(data),
                    "reg": _enc_array(reg), "t": round(part[-1][4], 4),
                }) + "\n")
                total += len(data)
                i = j
            run.clear()

        for it in items:
            kind = it[0]
            if kind == "steps":
                if run and run[-1][1] + len(run[-1][2]) != it[1]:
                    flush_run()
                if len(it[2]):
                    run.append(it)
                continue
            flush_run()
            if kind == "eval":
                ev = it[1]
                obj = {"type": "eval", "step": ev.step, "train_acc": ev.train_acc,
                       "val_acc": ev.val_acc, "val_loss": ev.val_loss,
                       "train_loss": ev.train_loss, "t": round(it[2], 4)}
            elif kind == "event":
                obj = {"type": "event", **it[1].to_dict(), "t": round(it[2], 4)}
            else:
                obj = {"type": "summary", **it[1], "t": round(it[2], 4)}
            lines.append(_dumps(_enc(obj)) + "\n")
        flush_run()
        return lines, total


def recorder_of(session: Any) -> Recorder | None:
    """The Recorder observing a trainer (for the UI's one-time warning), or None."""
    for ob in getattr(session, "observers", ()):
        if isinstance(ob, Recorder):
            return ob
    return None


# -- reading --------------------------------------------------------------------------
@dataclass
class Recording:
    """A recording read back: header, columnar step arrays, evaluations, events.

    Step arrays have one entry per recorded step (float64, bit-identical to what was
    written). ``block_end`` / ``block_t`` give, for every ``steps`` line, the step count
    after it and its running-time stamp (seconds, pauses excluded): the replay clock.
    """

    path: str
    header: dict[str, Any]
    data_loss: np.ndarray  # (steps,) data part of each step's loss
    reg_loss: np.ndarray  # (steps,) regularization part
    loss: np.ndarray  # (steps,) data + reg, as History computes it
    block_end: np.ndarray  # (blocks,) int64: steps recorded after each steps line
    block_t: np.ndarray  # (blocks,) float64: running seconds at the end of each block
    evaluations: list[Evaluation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    event_t: list[float] = field(default_factory=list)  # running seconds of each event
    summary: dict[str, Any] | None = None  # the closing summary; None if it never closed
    torn: bool = False  # the last line was cut short (and ignored)
    notes: list[str] = field(default_factory=list)  # human-readable remarks (torn tail)

    @property
    def steps(self) -> int:
        return int(self.data_loss.shape[0])

    @property
    def config(self) -> dict[str, Any]:
        return self.header.get("config", {})

    @property
    def parent(self) -> dict[str, Any] | None:
        return self.header.get("parent")

    @property
    def complete(self) -> bool:
        """True when the session closed cleanly (a summary line is present)."""
        return self.summary is not None


class _Grow:
    """A growable float64/int64 array (amortized O(1) appends)."""

    def __init__(self, dtype: type = np.float64) -> None:
        self.buf: np.ndarray = np.empty(1024, dtype=dtype)
        self.n = 0

    def extend(self, a: np.ndarray) -> None:
        k = a.shape[0]
        if self.n + k > self.buf.shape[0]:
            new = np.empty(max(2 * self.buf.shape[0], self.n + k), dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new
        self.buf[self.n : self.n + k] = a
        self.n += k

    def view(self) -> np.ndarray:
        return self.buf[: self.n]


def _float_list(v: Any, what: str) -> np.ndarray:
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list of numbers")
    types = set(map(type, v))
    if types <= {float, int}:
        return np.array(v, dtype=np.float64) if v else np.empty(0, np.float64)
    return np.array([_dec_num(x, what) for x in v], dtype=np.float64)


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{what} must be a whole number >= 0, got {str(v)[:40]!r}")
    return v


class RecordingParser:
    """Incremental reader: feed it complete lines in order; it checks and accumulates.

    Used by :func:`load_recording` (whole file) and by replay's follow mode (a growing
    file, a few lines at a time). ``snapshot()`` gives a :class:`Recording`.
    """

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.header: dict[str, Any] | None = None
        self.lineno = 0  # lines consumed so far (1-based number of the last one)
        self._data = _Grow()
        self._reg = _Grow()
        self._bend = _Grow(np.int64)
        self._bt = _Grow()
        self.evaluations: list[Evaluation] = []
        self.events: list[Event] = []
        self.event_t: list[float] = []
        self.summary: dict[str, Any] | None = None

    @property
    def steps(self) -> int:
        return self._data.n

    @property
    def data_loss(self) -> np.ndarray:
        """(steps,) the data losses so far (a view: valid until the next feed)."""
        return self._data.view()

    @property
    def reg_loss(self) -> np.ndarray:
        return self._reg.view()

    @property
    def block_end(self) -> np.ndarray:
        """(blocks,) int64 step count after each steps line."""
        return self._bend.view()

    @property
    def block_t(self) -> np.ndarray:
        """(blocks,) running seconds at the end of each steps line."""
        return self._bt.view()

    def feed(self, line: bytes | str) -> None:
        """Parse one complete line (without or with its newline).

        Raises:
            RecordingError: the line is malformed, out of order or not a recording.
        """
        self.lineno += 1
        try:
            self._feed(line)
        except RecordingError:
            raise
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError,
                MemoryError, AttributeError) as e:
            msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise RecordingError(f"{self.path}: line {self.lineno}: {msg}") from None

    def _err(self, msg: str) -> RecordingError:
        return RecordingError(f"{self.path}: line {self.lineno}: {msg}")

    def _feed(self, line: bytes | str) -> None:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                if self.header is None:
                    raise RecordingError(f"{self.path}: not a descent recording (binary "
                                         "data, not JSON lines)") from None
                raise self._err("not UTF-8 text") from None
        line = line.rstrip("\r\n")
        if self.header is None:
            self._feed_header(line)
            return
        if not line.strip():
            raise self._err("empty line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise self._err(f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise self._err("expected a JSON object")
        if self.summary is not None:
            raise self._err("data after the closing summary")
        kind = obj.get("type")
        if kind == "steps":
            start = _int(obj["start"], "start")
            if start != self._data.n:
                raise self._err(f"steps start at {start} but {self._data.n} steps came "
                                "before (a gap or overlap)")
            data = _float_list(obj["data"], "data")
            reg = _float_list(obj["reg"], "reg")
            if data.shape != reg.shape:
                raise self._err(f"data has {data.shape[0]} values but reg has {reg.shape[0]}")
            t = _dec_num(obj.get("t", 0.0), "t")
            self._data.extend(data)
            self._reg.extend(reg)
            self._bend.extend(np.array([self._data.n], dtype=np.int64))
            self._bt.extend(np.array([t]))
        elif kind == "eval":
            ev = Evaluation(
                step=_int(obj["step"], "step"),
                train_acc=_dec_num(obj["train_acc"], "train_acc"),
                val_acc=_dec_num(obj["val_acc"], "val_acc"),
                val_loss=_dec_num(obj["val_loss"], "val_loss"),
                train_loss=_dec_num(obj["train_loss"], "train_loss"),
            )
            if self.evaluations and ev.step < self.evaluations[-1].step:
                raise self._err(f"evaluation at step {ev.step} comes after step "
                                f"{self.evaluations[-1].step}")
            self.evaluations.append(ev)
        elif kind == "event":
            kind_ = obj.get("kind")
            if not isinstance(kind_, str):
                raise self._err("event without a kind")
            name = obj.get("name", "")
            detail = obj.get("detail", "")
            if not isinstance(name, str) or not isinstance(detail, str):
                raise self._err("event name and detail must be strings")
            event = Event(step=_int(obj["step"], "step"), kind=kind_, name=name,
                          value=_dec_value(obj.get("value")), old=_dec_value(obj.get("old")),
                          detail=detail)
            if self.events and event.step < self.events[-1].step:
                raise self._err(f"event at step {event.step} comes after step "
                                f"{self.events[-1].step}")
            self.events.append(event)
            self.event_t.append(_dec_num(obj.get("t", 0.0), "t"))
        elif kind == "summary":
            self.summary = {k: _dec_value(v) for k, v in obj.items() if k != "type"}
        else:
            raise self._err(f"unknown line type {str(kind)[:40]!r}")

    def _feed_header(self, line: str) -> None:
        not_rec = RecordingError(f"{self.path}: not a descent recording (line 1 is not a "
                                 f"'{FORMAT}' header)")
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            raise not_rec from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise not_rec
        v = obj.get("version")
        if not isinstance(v, int) or isinstance(v, bool):
            raise self._err(f"header has no valid version: {str(v)[:40]!r}")
        if v > VERSION:
            raise RecordingError(f"{self.path}: recording format version {v} is newer than "
                                 f"this descent reads (up to {VERSION}); upgrade descent")
        if v < 1:
            raise self._err(f"unknown recording format version {v}")
        if not isinstance(obj.get("config"), dict):
            raise self._err("header has no config object")
        if not isinstance(obj.get("dataset", {}), dict):
            raise self._err("header dataset must be an object")
        parent = obj.get("parent")
        if parent is not None and not (isinstance(parent, dict)
                                       and isinstance(parent.get("path"), str)
                                       and isinstance(parent.get("step"), int)):
            raise self._err("header parent must be null or {path, step}")
        self.header = obj

    def snapshot(self, *, torn: bool = False, notes: list[str] | None = None) -> Recording:
        if self.header is None:
            raise RecordingError(f"{self.path}: empty file, not a descent recording")
        data = self._data.view().copy()
        reg = self._reg.view().copy()
        return Recording(
            path=self.path, header=self.header, data_loss=data, reg_loss=reg,
            loss=data + reg, block_end=self._bend.view().copy(),
            block_t=self._bt.view().copy(), evaluations=list(self.evaluations),
            events=list(self.events), event_t=list(self.event_t), summary=self.summary,
            torn=torn, notes=list(notes or []),
        )


def load_recording(path: str | os.PathLike, *, allow_torn_tail: bool = True) -> Recording:
    """Read a whole recording.

    Args:
        path: the ``.jsonl`` file.
        allow_torn_tail: accept a last line cut short by a crash or ``kill -9`` (the
            result has ``torn=True`` and a note); False makes it an error.

    Returns:
        The :class:`Recording`.

    Raises:
        RecordingError: missing or unreadable file, not a recording, a newer version, a
            malformed line (named by its number), a gap in the steps.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise RecordingError(f"{path}: cannot read ({e.strerror or e})") from None
    lines = raw.split(b"\n")
    last = lines.pop()  # b"" when the file ends with a newline
    parser = RecordingParser(path)
    for line in lines:
        parser.feed(line)
    torn, notes = False, []
    if last.strip():
        try:
            parser.feed(last)  # complete object but its newline never made it
        except RecordingError:
            if parser.header is None:
                raise first_line_error(path, last) from None
            if not allow_torn_tail:
                raise
            torn = True
            notes.append(f"last line ({parser.lineno}) is cut short and was ignored "
                         "(the session was killed while writing)")
    rec = parser.snapshot(torn=torn, notes=notes)
    if rec.summary is None:
        rec.notes.append("no closing summary: the session did not end cleanly")
    return rec


# -- measurements for `descent bench` ---------------------------------------------------
def _synthesize(path: str, steps: int, chunk: int = 64, eval_every: int = 200) -> None:
    """Record ``steps`` made-up steps (17-digit floats, like real losses) with a Recorder."""

    class _Info:
        def describe(self) -> dict[str, Any]:
            return {"spec": "bench", "fingerprint": "-"}

    from engine.config import Config

    rng = np.random.default_rng(0)
    rec = Recorder(path, Config(), _Info())
    for s in range(0, steps, 65536):
        n = min(65536, steps - s)
        data, reg = 2.3 * rng.random(n), 1e-3 * rng.random(n)
        for k in range(0, n, chunk):
            if (s + k) % eval_every < chunk:
                rec.on_eval(Evaluation(s + k, 0.5, 0.5, 1.5, 1.5))
            rec.on_steps(s + k, data[k:k + chunk], reg[k:k + chunk])
    rec.close({"steps": steps})


def _cpu_cost_row(path: str, steps: int = 200_000, chunk: int = 64,
                  target: float = 3000.0) -> tuple[str, str, str, str, str]:
    """CPU the recorder spends per step (both threads), measured with thread CPU clocks,
    so a busy machine does not blur it; and what it costs at ``target`` steps/s."""

    class _Info:
        def describe(self) -> dict[str, Any]:
            return {"spec": "bench", "fingerprint": "-"}

    from engine.config import Config

    rng = np.random.default_rng(0)
    data, reg = 2.3 * rng.random(steps), 1e-3 * rng.random(steps)
    rec = Recorder(path, Config(), _Info())
    t0 = time.thread_time()
    for s in range(0, steps, chunk):  # the trainer thread's side
        rec.on_steps(s, data[s:s + chunk], reg[s:s + chunk])
    hot = time.thread_time() - t0
    rec.close()  # stop the background writer before timing its work here
    items = [("steps", s, data[s:s + chunk], reg[s:s + chunk], 0.0)
             for s in range(0, steps, chunk)]
    t0 = time.thread_time()
    for k in range(0, len(items), 64):  # the writer's side, in flush-sized batches
        rec._serialize(items[k:k + 64])
    cold = time.thread_time() - t0
    us = 1e6 * (hot + cold) / steps
    return ("record CPU per step", f"{us:.2f} µs", f"{1e6 * hot / steps:.2f} µs hot loop",
            f"{us * target / 1e4:.2f}%", f"of one core at {target:,.0f} steps/s "
            "(trainer thread + writer thread CPU time)")


def bench_recording(ctx: Any = None, *, sizes: tuple[int, ...] = (10**4, 10**5, 10**6),
                    repeats: int = 9, seconds: float = 0.5,
                    spec: str = "synthetic:5000") -> list[tuple[str, str, str, str, str]]:
    """Recording size, load time and overhead, as rows for ``engine.bench.add_section``.

    Rows are ``(workload, engine, reference, ratio, note)``: for each size, the file size
    and the time to load it and to open it in replay at its end; then headless training
    speed at batch 256 with the recorder against without it, interleaved (A B B A ...),
    the median of ``repeats`` pairs' ratios, runs of ``seconds`` each; and the recorder's
    CPU time per step (thread CPU clocks: meaningful even on a busy machine, where
    wall-clock speed is not).

    Args:
        ctx: the bench Context (unused: the overhead run needs a real Dataset).
        sizes: step counts to synthesize.
        repeats: interleaved timed runs for the overhead.
        seconds: length of one timed run.
        spec: the dataset for the overhead run (CIFAR-shaped, D = 3073).
    """
    import statistics
    import tempfile

    from engine.bench import median_ratio
    from engine.config import Config
    from engine.data import load_dataset
    from engine.replay import Replayer
    from engine.trainer import Trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"r{n}.jsonl")
            _synthesize(path, n)
            mb = os.path.getsize(path) / 1e6
            t = time.perf_counter()
            load_recording(path)
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            Replayer(path).seek(n)
            open_s = time.perf_counter() - t
            rows.append((f"recording {n:>9,d} steps", f"{mb:.1f} MB", "< 100 MB at 10^6",
                         f"{mb * 1e6 / n:.0f} B/step",
                         f"load {load_s:.2f} s, replay open+seek end {open_s:.2f} s"))
        rows.append(_cpu_cost_row(os.path.join(tmp, "cpu.jsonl")))
        ds = load_dataset(spec)
        cfg = Config(data=spec, batch_size=256, on_diverge="ignore").resolved(ds)
        plain = Trainer(cfg, ds)
        recorder = Recorder(os.path.join(tmp, "overhead.jsonl"), cfg, ds)
        recorded = Trainer(cfg, ds, observers=[recorder])
        for tr in (plain, recorded):  # warm up: compile, first chunk sizes
            for _ in range(5):
                tr.run_chunk()
        rates: dict[int, list[float]] = {0: [], 1: []}
        for i in range(repeats):
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):  # A B B A ...: no order bias
                tr = (plain, recorded)[k]
                s0, t0 = tr.step, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    tr.run_chunk()
                rates[k].append((tr.step - s0) / (time.perf_counter() - t0))
        recorder.close()
        off, on = statistics.median(rates[0]), statistics.median(rates[1])
        ratio = median_ratio(rates[1], rates[0])
        rows.append(("record sgd B=256 (headless)", f"{on:,.0f} steps/s", f"{off:,.0f} steps/s",
                     f"{ratio:.3f}", f"recorder on vs off, {spec}, median of {repeats} "
                     f"interleaved pairs; overhead {100 * (1 - ratio):+.1f}%"))
    return rows
