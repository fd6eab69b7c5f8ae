"""What a run has done so far: per-step losses, evaluations and events, in columnar arrays.

The trainer thread appends; the UI thread (or replay, or verify) reads. Appends take a
short lock and write into preallocated arrays that double when full, so a reader's
snapshot is a set of read-only views that later appends never change (a reallocation
leaves old views pointing at the old, still-valid buffer).

Step ``i`` of a run is the i-th optimizer step, counted from 0. ``loss[i]`` is the
training loss of the weights *before* step i's update (data part on that step's batch,
plus ``reg * sum(W*W)``), so ``loss[0]`` is the loss of the initial weights.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

_INITIAL_CAPACITY = 4096


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: a control applied, an alarm, a rescue, a pause.

    ``step`` is the index of the next step to run when the event took effect, so an event
    at step k affects steps k, k+1, ... and is drawn as a marker at x = k.
    """

    step: int
    kind: str
    """One of: control, alarm, warning, rescue, pause, resume, finish, info."""
    name: str = ""
    """For a control: lr, reg, batch_size, loss, optimizer, reset, step, on_diverge;
    for an alarm or warning: the rule that fired."""
    value: Any = None
    """The new value (controls), the loss that fired (alarms), the new lr (rescue)."""
    old: Any = None
    """The value before a control, for the event log."""
    detail: str = ""
    """One human-readable line."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and loss measured at a step (before that step's update)."""

    step: int
    train_acc: float
    """Accuracy on a fixed subsample of the training set."""
    val_acc: float
    val_loss: float
    """Data loss plus regularization on the validation set."""
    train_loss: float
    """Data loss plus regularization on the same training subsample."""


@dataclass(frozen=True)
class Snapshot:
    """A consistent, read-only view of a history at one moment."""

    steps: int
    """Number of steps recorded; the per-step arrays have this length."""
    loss: np.ndarray
    data_loss: np.ndarray
    reg_loss: np.ndarray
    eval_step: np.ndarray
    train_acc: np.ndarray
    val_acc: np.ndarray
    val_loss: np.ndarray
    train_loss: np.ndarray
    events: tuple[Event, ...]
    version: int
    """Increases with every append; a reader redraws only when it changed."""


class _Column:
    """A growable float64 (or int64) array with amortized O(1) appends."""

    __slots__ = ("buf", "n")

    def __init__(self, dtype: type = np.float64) -> None:
        self.buf: np.ndarray = np.empty(_INITIAL_CAPACITY, dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray | list[float] | float) -> None:
        values = np.atleast_1d(np.asarray(values, dtype=self.buf.dtype))
        k = values.shape[0]
        if self.n + k > self.buf.shape[0]:
            cap = max(2 * self.buf.shape[0], self.n + k)
            new = np.empty(cap, dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new
        self.buf[self.n : self.n + k] = values
        self.n += k

    def view(self) -> np.ndarray:
        v = self.buf[: self.n]
        v.flags.writeable = False
        return v

    def truncate(self, n: int) -> None:
        self.n = min(self.n, n)


@dataclass
class History:
    """Columnar record of a run, safe for one writer thread and any number of readers."""

    _loss: _Column = field(default_factory=_Column)
    _data: _Column = field(default_factory=_Column)
    _reg: _Column = field(default_factory=_Column)
    _eval_step: _Column = field(default_factory=lambda: _Column(np.int64))
    _train_acc: _Column = field(default_factory=_Column)
    _val_acc: _Column = field(default_factory=_Column)
    _val_loss: _Column = field(default_factory=_Column)
    _train_loss: _Column = field(default_factory=_Column)
    _events: list[Event] = field(default_factory=list)
    _version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- writing (one thread) -------------------------------------------------------
    def append_steps(self, data_loss: np.ndarray, reg_loss: np.ndarray) -> None:
        """Append one chunk of steps; loss = data + reg, computed here in float64."""
        data = np.asarray(data_loss, dtype=np.float64)
        reg = np.asarray(reg_loss, dtype=np.float64)
        with self._lock:
            self._data.extend(data)
            self._reg.extend(reg)
            self._loss.extend(data + reg)
            self._version += 1

    def append_eval(self, ev: Evaluation) -> None:
        with self._lock:
            self._eval_step.extend(ev.step)
            self._train_acc.extend(ev.train_acc)
            self._val_acc.extend(ev.val_acc)
            self._val_loss.extend(ev.val_loss)
            self._train_loss.extend(ev.train_loss)
            self._version += 1

    def append_event(self, ev: Event) -> None:
        with self._lock:
            self._events.append(ev)
            self._version += 1

    def truncate(self, steps: int) -> None:
        """Forget everything at or after ``steps`` (used by replay when seeking back)."""
        with self._lock:
            for col in (self._loss, self._data, self._reg):
                col.truncate(steps)
            keep = int(np.searchsorted(self._eval_step.view(), steps, side="left"))
            for col in (self._eval_step, self._train_acc, self._val_acc,
                        self._val_loss, self._train_loss):
                col.truncate(keep)
            self._events = [e for e in self._events if e.step < steps]
            self._version += 1

    # -- reading (any thread) -------------------------------------------------------
    @property
    def steps(self) -> int:
        return self._loss.n

    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                steps=self._loss.n,
                loss=self._loss.view(),
                data_loss=self._data.view(),
                reg_loss=self._reg.view(),
                eval_step=self._eval_step.view(),
                train_acc=self._train_acc.view(),
                val_acc=self._val_acc.view(),
                val_loss=self._val_loss.view(),
                train_loss=self._train_loss.view(),
                events=tuple(self._events),
                version=self._version,
            )

    def evaluations(self) -> list[Evaluation]:
        s = self.snapshot()
        return [
            Evaluation(int(st), float(ta), float(va), float(vl), float(tl))
            for st, ta, va, vl, tl in zip(
                s.eval_step, s.train_acc, s.val_acc, s.val_loss, s.train_loss, strict=True
            )
        ]


def decimate(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a curve to at most ``2 * columns`` points, keeping each column's min and max.

    A spike is never hidden: every column of the plot contributes its lowest and highest
    value (in x order), so drawing costs the same at step 100 and at step 10**7.
    Non-finite values are kept as they are (NaN and inf mark divergence); a column whose
    values are all NaN yields NaN.

    Args:
        x: increasing x positions, shape (n,).
        y: values, shape (n,).
        columns: plot width in columns (>= 1).

    Returns:
        (xs, ys), each of length at most ``2 * columns``.
    """
    n = int(y.shape[0])
    if n <= 2 * columns:
        return np.asarray(x), np.asarray(y)
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    starts = edges[:-1]
    # nan-aware min/max per column; reduceat on an array with inf/nan keeps them.
    finite = np.where(np.isnan(y), np.inf, y)
    lo_val = np.minimum.reduceat(finite, starts)
    finite_hi = np.where(np.isnan(y), -np.inf, y)
    hi_val = np.maximum.reduceat(finite_hi, starts)
    # positions of min and max within each column, for x and for ordering
    xs = np.empty(2 * columns, dtype=np.float64)
    ys = np.empty(2 * columns, dtype=np.float64)
    x_arr = np.asarray(x, dtype=np.float64)
    xs[0::2] = x_arr[starts]
    xs[1::2] = x_arr[edges[1:] - 1]
    all_nan = np.isposinf(lo_val) & np.isneginf(hi_val)
    lo_val = np.where(all_nan, np.nan, lo_val)
    hi_val = np.where(all_nan, np.nan, hi_val)
    ys[0::2] = lo_val
    ys[1::2] = hi_val
    return xs, ys
