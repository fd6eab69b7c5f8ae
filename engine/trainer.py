"""The trainer: owns W, the random generator, the step counter and the live controls.

One thread runs :meth:`Trainer.run`; any other thread steers it with :meth:`Trainer.send`,
which only puts a control on a queue. The loop runs *chunks* of steps through the Numba
kernels (a chunk is ~20 ms of work, so a control takes effect within a frame while the
Python overhead per step stays negligible: ``descent bench`` measures it, see
:func:`bench_bookkeeping`) and, between chunks, applies queued controls,
evaluates, checks for divergence and tells its observers (the History it owns, a
Recorder, ...). Nothing here imports textual.

Determinism: every random draw comes from one ``numpy.random.Generator(PCG64(seed))``
and batch indices are drawn per step, so how a run is cut into chunks never changes a
number. Every state-changing action is an :class:`~engine.history.Event` stamped with the
step at which it took effect; re-applying the same events at the same steps (``script``)
reproduces a run bit for bit, which is what ``descent verify`` and ``descent fork`` do.
"""

from __future__ import annotations

import enum
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from engine import kernels, optim
from engine.config import Config, ConfigError, validate_control
from engine.data import Dataset, aligned_rows
from engine.divergence import Alarm, DivergenceConfig, DivergenceMonitor
from engine.history import Evaluation, Event, History

CHUNK_SECONDS = 0.02
"""Target wall time of one chunk: short enough that a key press lands within a frame."""
MAX_CHUNK = 1000
"""Upper bound on steps per chunk (tiny data can run 100k steps/s)."""
EVAL_ROWS = 1000
"""Training rows in the fixed subsample used for training accuracy (CS231n uses 1000)."""
MAX_AUTO_RESCUES = 3
"""Automatic rescues in a row before the trainer pauses; the count starts again once a
whole evaluation interval has passed healthy since the last rescue."""
RATIO_PATIENCE = 3
"""Evaluations in a row with update/weight ratio above 0.1 before the warning (measured
once per evaluation interval, on the step right after the evaluation)."""
LOSS_KINDS = {"svm": kernels.SVM, "softmax": kernels.SOFTMAX}
SCRIPTED_KINDS = ("control", "rescue", "pause", "resume")
"""Event kinds that a script re-applies (the ones that change numbers or the monitor)."""


class State(str, enum.Enum):
    """What the header shows."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DIVERGED = "DIVERGED"
    FINISHED = "FINISHED"


class TrainerObserver(Protocol):
    """Told everything the trainer does, on the trainer's thread: be quick, never block."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_steps(self, start: int, data_loss: np.ndarray, reg_loss: np.ndarray) -> None: ...
    def on_eval(self, ev: Evaluation) -> None: ...
    def on_event(self, ev: Event) -> None: ...
    def on_close(self, summary: dict[str, Any]) -> None: ...


class Trainer:
    """Trains a linear classifier (scores = X·W, bias in W's last row) in chunks of steps.

    Args:
        config: the run's settings; ``None`` fields are filled from the dataset.
        dataset: preprocessed data (X with the bias column, int32 labels).
        observers: told about every chunk, evaluation and event (e.g. a Recorder).
        script: recorded events to re-apply at their steps (verify, fork). While a script
            is being followed, alarms are recorded but trigger no automatic reaction.
    """

    def __init__(
        self,
        config: Config,
        dataset: Dataset,
        *,
        observers: Sequence[TrainerObserver] = (),
        script: Sequence[Event] | None = None,
    ) -> None:
        self.config = config.resolved(dataset)
        self.dataset = dataset
        self.history = History()
        self.observers = list(observers)
        self.monitor = DivergenceMonitor(DivergenceConfig(ratio_patience=RATIO_PATIENCE))
        self.alarm: Alarm | None = None
        self.step = 0
        self.samples = 0
        self.alarms = 0
        self.warnings = 0
        self.rescues = 0
        self.steps_per_s = 0.0
        self.started = time.monotonic()
        self._rng = np.random.Generator(np.random.PCG64(self.config.seed))
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._paused = False
        self._held_by_alarm = False  # paused by an alarm (on-diverge pause) until resumed
        self._last_step_seconds = 0.0  # wall time per step in the last chunk (0: none yet)
        self._finished = False
        self._closed = False
        self._stop_requested = False
        self._single_steps = 0
        self._auto_rescues = 0
        self._last_rescue_step = -(10**18)
        self._run_seconds = 0.0
        self.step_seconds = 0.0
        """Wall time spent in the steps themselves (``optim.run_steps``: batch indices and
        the kernel call); the rest of a chunk's time is the trainer's bookkeeping."""
        self.eval_seconds = 0.0
        """Wall time spent evaluating (training subsample and validation set)."""
        self._last_eval_step = -1
        self._script = deque(sorted(
            (e for e in (script or ()) if e.kind in SCRIPTED_KINDS), key=lambda e: e.step
        ))
        self._scripted = script is not None
        x, y = dataset.X_train, dataset.y_train
        assert self.config.init_scale is not None  # resolved() filled it
        self.W = optim.init_weights(self._rng, x.shape[1], dataset.num_classes,
                                    self.config.init_scale)
        self._lr_of_w = self.config.lr  # the lr of the last step run: the one W was trained at
        self._healthy = (0, self.W.copy(), self._lr_of_w)
        eval_rng = np.random.Generator(np.random.PCG64([self.config.seed, 1]))
        rows = eval_rng.choice(x.shape[0], size=min(EVAL_ROWS, x.shape[0]), replace=False)
        rows.sort()
        self._eval_X = aligned_rows(rows.size, x.shape[1])
        self._eval_X[...] = x[rows]
        self._eval_y = np.ascontiguousarray(y[rows])
        self._buf_data = np.empty(MAX_CHUNK, dtype=np.float64)
        self._buf_reg = np.empty(MAX_CHUNK, dtype=np.float64)
        self._idx_buf: np.ndarray | None = None
        for ob in self.observers:
            ob.on_start(self)

    # -- steering (any thread) -----------------------------------------------------
    def send(self, name: str, value: Any = None) -> None:
        """Queue a control for the next chunk boundary. Thread-safe and non-blocking."""
        self._queue.put((name, value))
        self._wake.set()

    @property
    def state(self) -> State:
        if self._finished:
            return State.FINISHED
        if self.alarm is not None:
            return State.DIVERGED
        return State.PAUSED if self._paused else State.RUNNING

    @property
    def epoch(self) -> float:
        return self.samples / self.dataset.num_train

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def b(self) -> np.ndarray:
        """The biases, a view of W's last row (the bias trick)."""
        return self.W[-1]

    @property
    def full_batch(self) -> bool:
        """True when a step uses every training row (gd, or sgd at the full set size)."""
        return self.config.optimizer == "gd" or (
            self.config.optimizer == "sgd" and self.config.batch_size >= self.dataset.num_train
        )

    def end_script(self) -> None:
        """Stop following the script (fork: from here on the run is live again)."""
        self._script.clear()
        self._scripted = False

    # -- the loop (one thread) -------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Train until ``config.steps`` is reached, ``stop`` is set or a "stop" control.

        While paused the thread sleeps on the control queue. Returns the summary; the
        caller closes the trainer (:meth:`close`) when it is done with it.
        """
        while not self._finished and not self._stop_requested:
            if stop is not None and stop.is_set():
                break
            if self.run_chunk() == 0 and not self._finished:
                self._wake.wait(0.05)
                self._wake.clear()
        return self.summary()

    def run_chunk(self) -> int:
        """Apply due controls, then run one chunk of steps. Returns the steps run."""
        self._apply_controls()
        if self._finished or self._stop_requested:
            return 0
        limit = self._steps_allowed()
        if limit == 0:
            return 0
        if self.step % self.config.eval_every == 0 and self._last_eval_step != self.step:
            self._evaluate()
        n = min(limit, self._chunk_size(), self._next_boundary() - self.step)
        t0 = time.perf_counter()
        start = self.step
        data, reg = self._buf_data[:n], self._buf_reg[:n]
        ratio = None
        if start % self.config.eval_every == 0:
            # At each evaluation step (always a chunk boundary, so the measurement does not
            # depend on chunking) the first step runs alone to measure ‖ΔW‖ / ‖W‖.
            ratio = self._run(0, 1, data, reg)
            if n > 1:
                self._run(1, n, data, reg)
        else:
            self._run(0, n, data, reg)
        self.step += n
        self.samples += n * (self.dataset.num_train if self.full_batch
                             else self.config.batch_size)
        self.history.append_steps(data, reg)
        for ob in self.observers:
            ob.on_steps(start, data, reg)
        self._check_divergence(start, data + reg, ratio)
        dt = time.perf_counter() - t0
        self._run_seconds += dt
        rate = n / dt if dt > 0 else 0.0
        self.steps_per_s = rate if self.steps_per_s == 0 else 0.8 * self.steps_per_s + 0.2 * rate
        self._last_step_seconds = dt / n
        if self._single_steps:
            self._single_steps -= n
        if self.config.steps is not None and self.step >= self.config.steps:
            self._finish("reached --steps")
        return n

    def _run(self, lo: int, hi: int, data: np.ndarray, reg: np.ndarray) -> float | None:
        """Run steps lo..hi-1 of this chunk; for one gradient step, return ‖ΔW‖ / ‖W‖."""
        opt = "gd" if self.full_batch else self.config.optimizer
        self._lr_of_w = self.config.lr
        w_before = self.W.copy() if hi - lo == 1 and opt in ("sgd", "gd") else None
        params, idx_buf = self._params(), self._index_buffer(hi - lo)
        t0 = time.perf_counter()
        optim.run_steps(
            opt, self.dataset.X_train, self.dataset.y_train, self.W, self._rng,
            params, hi - lo, data[lo:hi], reg[lo:hi], idx_buf=idx_buf,
        )
        self.step_seconds += time.perf_counter() - t0
        if w_before is None:
            return None
        with np.errstate(all="ignore"):  # norms without BLAS (see optim._reg_loss)
            wn = math.sqrt(float(np.sum(np.square(w_before, dtype=np.float64))))
            dw = math.sqrt(float(np.sum(np.square(self.W - w_before, dtype=np.float64))))
            return dw / wn if wn > 0 else math.inf

    def _steps_allowed(self) -> int:
        """How many steps may run now: 0 while paused (unless single-stepping)."""
        if self._paused or (self.alarm is not None and self._held_by_alarm):
            return self._single_steps
        return MAX_CHUNK

    def _chunk_size(self) -> int:
        per_step = self._last_step_seconds
        if per_step <= 0:
            return 1 if self.full_batch else 8
        return max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / per_step)))

    def _next_boundary(self) -> int:
        """The next step a chunk must stop at: an evaluation, a scripted event, the end."""
        ev = self.config.eval_every
        bound = (self.step // ev + 1) * ev
        if self._script:
            bound = min(bound, max(self._script[0].step, self.step + 1))
        if self.config.steps is not None:
            bound = min(bound, max(self.config.steps, self.step + 1))
        return bound

    def _index_buffer(self, n: int) -> np.ndarray | None:
        if self.full_batch:
            return None
        b = self.config.batch_size
        if self._idx_buf is None or self._idx_buf.shape[1] != b or self._idx_buf.shape[0] < n:
            self._idx_buf = np.empty((max(n, 64), b), dtype=np.int64)
        return self._idx_buf

    def _params(self) -> optim.StepParams:
        c = self.config
        assert c.lr is not None and c.reg is not None
        assert c.sigma is not None and c.init_scale is not None
        return optim.StepParams(
            loss_kind=LOSS_KINDS[c.loss], lr=c.lr, reg=c.reg, batch_size=c.batch_size,
            sigma=c.sigma, init_scale=c.init_scale,
        )

    # -- evaluation and divergence -------------------------------------------------------
    def _evaluate(self) -> Evaluation:
        t0 = time.perf_counter()
        try:
            return self._evaluate_now()
        finally:
            self.eval_seconds += time.perf_counter() - t0

    def _evaluate_now(self) -> Evaluation:
        kind = LOSS_KINDS[self.config.loss]
        reg = float(self.config.reg or 0.0)
        train_loss, train_acc = kernels.evaluate(self._eval_X, self._eval_y, self.W, reg, kind)
        val_loss, val_acc = kernels.evaluate(
            self.dataset.X_val, self.dataset.y_val, self.W, reg, kind
        )
        ev = Evaluation(self.step, float(train_acc), float(val_acc), float(val_loss),
                        float(train_loss))
        self._last_eval_step = self.step
        self.history.append_eval(ev)
        for ob in self.observers:
            ob.on_eval(ev)
        if self.monitor.healthy and self.alarm is None and math.isfinite(train_loss):
            self._healthy = (self.step, self.W.copy(), self._lr_of_w)
            if self.step >= self._last_rescue_step + self.config.eval_every:
                self._auto_rescues = 0  # a whole healthy interval since the last rescue
        return ev

    def _check_divergence(self, start: int, losses: np.ndarray, ratio: float | None) -> None:
        fired = self.monitor.update(start, losses)
        if ratio is not None:
            warn = self.monitor.check_update_ratio(start, ratio)
            if warn is not None:
                fired.append(warn)
        for a in fired:
            self._emit(Event(a.step, a.level, a.rule, a.loss, None, a.detail))
            if a.level == "alarm":
                self.alarms += 1
                if self.alarm is None:
                    self.alarm = a
                    self._react(a)
            else:
                self.warnings += 1

    def _react(self, alarm: Alarm) -> None:
        """Apply --on-diverge to a fresh alarm (not while following a script)."""
        self._held_by_alarm = False
        if self._scripted:
            return
        action = self.config.on_diverge
        if action == "rescue" and self._auto_rescues < MAX_AUTO_RESCUES:
            self._auto_rescues += 1
            self._rescue()
        elif action in ("pause", "rescue"):
            self._held_by_alarm = True
            self._emit(Event(self.step, "pause", "diverged", detail=f"paused: {alarm.detail}"))
        elif action == "stop":
            self._finish(f"diverged: {alarm.detail}")

    def _rescue(self, lr: Any = None) -> None:
        """Restore the last healthy weights, lower lr, clear the alarm.

        The new lr is a tenth of the one that blew up, or the lr of the steps that led to
        the healthy weights if that is lower: after lr x10^4 (``>>>>``) one rescue
        goes back to where the run was healthy instead of taking four. A re-run (or a
        fork at the rescue's step) passes the recorded value as ``lr``, so recordings made
        under another rule replay exactly; anything but a finite lr > 0 is computed.
        """
        step0, w, healthy_lr = self._healthy
        self.W[...] = w
        old = self.config.lr
        assert old is not None
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            lr = old / 10 if healthy_lr is None else min(old / 10, healthy_lr)
        self.config = self.config.replace(lr=lr)
        self.monitor.after_rescue()
        self.alarm = None
        self._held_by_alarm = False
        self.rescues += 1
        self._last_rescue_step = self.step
        self._emit(Event(self.step, "rescue", "rescue", self.config.lr, old,
                         f"restored weights from step {step0}, lr {old:.2e} → "
                         f"{self.config.lr:.2e}"))

    # -- controls ------------------------------------------------------------------------
    def _apply_due_script(self) -> None:
        """Apply the scripted events due at or before the current step."""
        while self._script and self._script[0].step <= self.step:
            self._apply_scripted(self._script.popleft())

    def _apply_controls(self) -> None:
        self._apply_due_script()
        while True:
            try:
                name, value = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply(name, value)
            except ConfigError as e:
                self._emit(Event(self.step, "info", "refused", value, None, str(e)))

    def _apply_scripted(self, ev: Event) -> None:
        if ev.kind == "rescue":
            self._rescue(ev.value)
        elif ev.kind == "resume":
            self._resume_after_alarm()
        elif ev.kind == "control":
            self._apply(ev.name, ev.value)

    def _apply(self, name: str, value: Any) -> None:
        c = self.config
        if name in ("lr", "reg", "batch_size", "loss", "optimizer", "on_diverge"):
            value = validate_control(name, value, self.dataset.num_train)
            old = getattr(c, name)
            if value == old:
                return
            self.config = c.replace(**{name: value})
            if name in ("loss", "reg"):  # the loss's scale changes: take a new baseline
                self.monitor.rearm()
            self._emit(Event(self.step, "control", name, value, old, _describe(name, old, value)))
        elif name == "reset":
            assert c.init_scale is not None
            D, C = self.W.shape
            self.W[...] = optim.init_weights(self._rng, D, C, c.init_scale)
            self.monitor.rearm()
            self.alarm = None
            self._held_by_alarm = False
            self._emit(Event(self.step, "control", "reset", detail="W reset to a new random init"))
        elif name == "rescue":  # a value is a recorded rescue's lr (a fork at its step)
            self._rescue(value)
        elif name == "answer_alarm":  # a fork going live with an alarm standing (verify.fork)
            if self.alarm is not None and not self._held_by_alarm:
                self._react(self.alarm)
        elif name == "pause" or (name == "toggle_pause" and not self._paused
                                 and not self._held_by_alarm):
            if not self._paused:
                self._paused = True
                self._emit(Event(self.step, "pause", "pause", detail="paused"))
        elif name in ("resume", "toggle_pause"):
            if self._paused or self._held_by_alarm:
                self._paused = False
                self._resume_after_alarm()
                self._emit(Event(self.step, "resume", "resume", detail="resumed"))
        elif name == "step":
            if self._paused or self._held_by_alarm:
                self._single_steps += 1
        elif name == "stop":
            self._stop_requested = True
        else:
            raise ConfigError(f"unknown control {name!r}")

    def _resume_after_alarm(self) -> None:
        if self._held_by_alarm or self.alarm is not None:
            self.alarm = None
            self._held_by_alarm = False
            self.monitor.after_rescue()

    def _emit(self, ev: Event) -> None:
        self.history.append_event(ev)
        for ob in self.observers:
            ob.on_event(ev)

    def _finish(self, why: str) -> None:
        if not self._finished:
            self._finished = True
            self._emit(Event(self.step, "finish", "finish", detail=why))

    def evaluate_test(self) -> dict[str, float] | None:
        """Loss and accuracy of the current W on the held-out test set, if the dataset has
        one. Never called during training: the test set is only evaluated when asked."""
        X, y = self.dataset.X_test, self.dataset.y_test
        if X is None or y is None or len(y) == 0:
            return None
        loss, acc = kernels.evaluate(X, y, self.W, float(self.config.reg or 0.0),
                                     LOSS_KINDS[self.config.loss])
        return {"test_loss": float(loss), "test_acc": float(acc)}

    # -- the end -----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The numbers DESIGN.md promises in ``--json`` (and the recording's last line)."""
        s = self.history.snapshot()
        last = self.history.evaluations()[-1] if s.eval_step.size else None
        loss = float(s.loss[-1]) if s.steps else None
        c = self.config
        return {
            "steps": self.step,
            "loss": loss,
            "train_acc": last.train_acc if last else None,
            "val_acc": last.val_acc if last else None,
            "val_loss": last.val_loss if last else None,
            "steps_per_s": self.step / self._run_seconds if self._run_seconds > 0 else 0.0,
            "diverged": self.alarm is not None,
            "alarms": self.alarms,
            "warnings": self.warnings,
            "rescues": self.rescues,
            "recording": None,
            "dataset": self.dataset.spec,
            "loss_kind": c.loss,
            "optimizer": c.optimizer,
            "lr": c.lr,
            "reg": c.reg,
            "batch_size": self.dataset.num_train if self.full_batch else c.batch_size,
            "seed": c.seed,
            "epoch": self.epoch,
            "elapsed_s": self.elapsed,
        }

    def close(self) -> dict[str, Any]:
        """Evaluate the final weights once, tell observers, return the summary. Idempotent."""
        if not self._closed:
            self._closed = True
            # A scripted event at the last step (an automatic rescue landed on the chunk
            # that ended the run) took effect before the recorded final evaluation.
            self._apply_due_script()
            if self._last_eval_step != self.step:
                self._evaluate()
            summary = self.summary()
            for ob in self.observers:
                ob.on_close(summary)
            self._summary = summary
        return self._summary


def _describe(name: str, old: Any, new: Any) -> str:
    label = {"lr": "lr", "reg": "λ", "batch_size": "batch", "loss": "loss",
             "optimizer": "opt", "on_diverge": "on-diverge"}[name]
    if isinstance(new, float):
        return f"{label} {old:.2e} → {new:.2e}"
    return f"{label} {old} → {new}"


# -- measurements for `descent bench` ---------------------------------------------------
def measure_bookkeeping(trainer: Trainer, seconds: float) -> dict[str, float]:
    """Run ``trainer`` headless for about ``seconds`` and split the wall time.

    Returns steps, chunks and seconds: ``wall`` (all of it, controls included), ``steps``
    (inside ``optim.run_steps``), ``eval`` (evaluations) and ``other`` = wall - steps -
    eval: the per-chunk bookkeeping (the control queue, history, observers, the
    divergence check, the update-ratio measurement, chunk sizing).
    """
    s0, k0, e0, chunks = trainer.step, trainer.step_seconds, trainer.eval_seconds, 0
    t0 = time.perf_counter()
    while True:
        trainer.run_chunk()
        chunks += 1
        wall = time.perf_counter() - t0
        if wall >= seconds or trainer.state is not State.RUNNING:
            break
    steps = trainer.step_seconds - k0
    evals = trainer.eval_seconds - e0
    return {"n_steps": float(trainer.step - s0), "chunks": float(chunks), "wall": wall,
            "steps": steps, "eval": evals, "other": max(0.0, wall - steps - evals)}


def bench_bookkeeping(ctx: Any = None, *, spec: str = "synthetic:5000",
                      batches: tuple[int, ...] = (32, 256), seconds: float = 1.0,
                      repeats: int = 5) -> list[tuple[str, str, str, str, str]]:
    """What the trainer costs beyond its steps, as rows for ``engine.bench.add_section``:
    for each batch size, the bookkeeping's µs per step (median of ``repeats`` headless
    runs of ``seconds``, a fresh trainer each), the steps' own µs, the bookkeeping's share
    of the wall time, and the evaluations' share (amortized over their interval). A bench
    Context's ``repeats`` (``descent bench --repeats``) overrides ``repeats``."""
    import statistics

    from engine.data import load_dataset

    repeats = getattr(ctx, "repeats", repeats)
    ds = load_dataset(spec)
    rows = []
    for B in batches:
        runs = []
        for _ in range(repeats):
            tr = Trainer(Config(data=spec, batch_size=B, on_diverge="ignore"), ds)
            for _ in range(3):  # warm up: first chunk sizes
                tr.run_chunk()
            runs.append(measure_bookkeeping(tr, seconds))

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] / r["n_steps"] for r in runs)

        def share(key: str, runs: list[dict[str, float]] = runs) -> float:
            return 100 * statistics.median(r[key] / r["wall"] for r in runs)

        per_chunk = statistics.median(r["n_steps"] / r["chunks"] for r in runs)
        rows.append((f"bookkeeping sgd B={B}", f"{1e6 * med('other'):.2f} µs/step",
                     f"{1e6 * med('steps'):.0f} µs/step", f"{share('other'):.2f}%",
                     f"of wall time: controls, history, divergence check, once per chunk "
                     f"(~{per_chunk:.0f} steps); evaluations every "
                     f"{tr.config.eval_every} steps {1e6 * med('eval'):.1f} µs/step "
                     f"({share('eval'):.1f}%); {spec}, median of {repeats}"))
    return rows
