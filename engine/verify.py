"""Verify a recording by re-executing it, and fork a recording at a step.

Both rebuild a run from its header (dataset spec and fingerprint, config, seed) and its
recorded events: the trainer's ``script`` re-applies controls, resets and rescues at the
steps they took effect (the trainer's determinism contract: same events at the same
steps ⇒ the same numbers, bit for bit). Verify then compares every recorded number; fork
stops at the fork step and continues live with new settings into a new recording.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import Config, ConfigError, validate_control
from engine.history import Evaluation, Event
from engine.recording import Recorder, Recording, RecordingError, load_recording, unique_path

EXIT_SAME, EXIT_DIFFERENT, EXIT_INPUT = 0, 1, 2
"""verify's exit statuses: identical (or within tolerance), different, missing input."""
EVAL_FIELDS = ("train_acc", "val_acc", "val_loss", "train_loss")
FORK_FIELDS = ("lr", "reg", "batch_size", "loss", "optimizer", "on_diverge")
"""Settings a fork may change (applied as controls at the fork step), besides steps."""


class VerifyInputError(Exception):
    """The recording or its dataset cannot be used (exit status 2); one-line message."""


@dataclass
class VerifyResult:
    """What verify found."""

    status: int  # EXIT_SAME, EXIT_DIFFERENT or EXIT_INPUT
    message: str  # the one line to print ("identical: ..." or the first difference)
    steps: int = 0  # steps re-executed
    step: int | None = None  # first step that differs (None when identical)
    metric: str = ""  # data_loss, reg_loss, an evaluation field, or "alarm"
    recorded: Any = None  # the recorded value at that step
    got: Any = None  # the re-executed value

    @property
    def identical(self) -> bool:
        return self.status == EXIT_SAME


# -- shared: rebuild a run ------------------------------------------------------------
def load_source(path: str | os.PathLike) -> tuple[Recording, Any, Config]:
    """Load a recording, its dataset (checked against the fingerprint) and its config.

    Raises:
        VerifyInputError: unreadable recording, missing dataset, different fingerprint.
    """
    from engine.data import DatasetError, load_dataset

    try:
        rec = load_recording(path)
    except RecordingError as e:
        raise VerifyInputError(str(e)) from None
    info = rec.header.get("dataset") or {}
    config = Config.from_dict(rec.config)
    spec = info.get("spec") or config.data
    try:
        dataset = load_dataset(spec, num_val=config.num_val)
    except DatasetError as e:
        raise VerifyInputError(f"dataset {spec!r} of the recording is not available: "
                               f"{e}") from None
    want = info.get("fingerprint")
    have = _fingerprint(dataset)
    if want is not None and have != want:
        raise VerifyInputError(f"dataset {spec!r} differs from the recorded one "
                               f"(fingerprint {have} != recorded {want}); "
                               "re-execution would not reproduce it")
    return rec, dataset, config


def _fingerprint(dataset: Any) -> Any:
    fp = getattr(dataset, "fingerprint", None)
    if fp is None and hasattr(dataset, "describe"):
        fp = dataset.describe().get("fingerprint")
    return fp


def _run_to(trainer: Any, steps: int) -> None:
    """Run a trainer headless until it has done exactly ``steps`` steps (its config.steps)."""
    idle = 0
    while trainer.step < steps and trainer.state.value != "FINISHED":
        if trainer.run_chunk() == 0:
            idle += 1
            if idle > 1000:  # a paused trainer would spin forever: say so instead
                raise RuntimeError(f"re-execution stalled at step {trainer.step}")
        else:
            idle = 0


# -- verify ---------------------------------------------------------------------------
def verify(path: str | os.PathLike, *, tolerance: float = 0.0) -> VerifyResult:
    """Re-execute a recording headless and compare every recorded number.

    Compared: each step's data and regularization loss, each evaluation (train/val
    accuracy and loss) and the alarms (step and rule). ``tolerance`` is relative:
    ``|a - b| <= tolerance * max(|a|, |b|)``; NaN equals NaN, inf equals the same inf.

    Args:
        path: the recording.
        tolerance: accepted relative difference; 0 means bit for bit.

    Returns:
        A :class:`VerifyResult` (status 2 when the recording or dataset is unusable).
    """
    from engine.trainer import Trainer

    try:
        rec, dataset, config = load_source(path)
    except VerifyInputError as e:
        return VerifyResult(EXIT_INPUT, str(e))
    n = rec.steps
    if n == 0:
        return VerifyResult(EXIT_SAME, "identical: the recording has no steps", 0)
    try:
        trainer = Trainer(config.replace(steps=n), dataset, script=rec.events)
    except ConfigError as e:
        return VerifyResult(EXIT_INPUT, f"recorded config is invalid: {e}")
    _run_to(trainer, n)
    trainer.close()  # the final evaluation, as a clean run does
    snap = trainer.history.snapshot()
    diffs: list[VerifyResult] = []
    for metric, want, got in (("data_loss", rec.data_loss, snap.data_loss),
                              ("reg_loss", rec.reg_loss, snap.reg_loss)):
        k = _first_diff(want, got[:n], tolerance)
        if k is not None:
            g = float(got[k]) if k < got.shape[0] else None
            diffs.append(_diff(k, metric, float(want[k]), g))
    evals = {e.step: e for e in trainer.history.evaluations()}
    for ev in rec.evaluations:
        d = _eval_diff(ev, evals.get(ev.step), tolerance)
        if d is not None:
            diffs.append(d)
            break
    d = _alarm_diff(rec.events, list(snap.events), n)
    if d is not None:
        diffs.append(d)
    if not diffs:
        what = f"{n} steps, {len(rec.evaluations)} evaluations, " \
               f"{sum(e.kind == 'alarm' for e in rec.events)} alarms"
        how = "bit for bit" if tolerance == 0 else f"within relative tolerance {tolerance:g}"
        return VerifyResult(EXIT_SAME, f"identical: {what} ({how})", n)
    first = min(diffs, key=lambda r: (r.step if r.step is not None else math.inf))
    first.steps = n
    first.message += _build_hint(rec.header.get("versions"))
    return first


def _build_hint(recorded_versions: Any) -> str:
    """A note for a difference in a recording made by other kernels (or that does not say
    which): their last bits can differ, so only a tolerance can compare the runs."""
    from engine.kernels import build

    now = build()
    then = recorded_versions.get("kernels") if isinstance(recorded_versions, dict) else None
    if then == now:
        return ""
    which = f"kernels {then!r}" if then else "kernels it does not name"
    return (f"; recorded with {which}, re-executed with {now!r}: the last bits can differ "
            f"between builds (compare with --tolerance 1e-6)")


def _same(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        eq = (a == b) | (np.isnan(a) & np.isnan(b))
        if tol > 0:
            eq |= np.abs(a - b) <= tol * np.maximum(np.abs(a), np.abs(b))
    return eq


def _first_diff(want: np.ndarray, got: np.ndarray, tol: float) -> int | None:
    m = min(want.shape[0], got.shape[0])
    bad = np.flatnonzero(~_same(want[:m], got[:m], tol))
    if bad.size:
        return int(bad[0])
    return m if got.shape[0] < want.shape[0] else None


def _diff(step: int, metric: str, want: Any, got: Any) -> VerifyResult:
    if isinstance(want, float) and isinstance(got, float):
        delta = got - want if math.isfinite(got - want) else math.nan
        rel = abs(delta) / max(abs(want), abs(got)) if max(abs(want), abs(got)) > 0 else 0.0
        how = f"recorded {want!r}, re-executed {got!r} (difference {delta:.3g}, " \
              f"relative {rel:.3g})"
    else:
        how = f"recorded {want!r}, re-executed {got!r}"
    return VerifyResult(EXIT_DIFFERENT, f"differs at step {step}: {metric}: {how}",
                        step=step, metric=metric, recorded=want, got=got)


def _eval_diff(want: Evaluation, got: Evaluation | None, tol: float) -> VerifyResult | None:
    if got is None:
        return _diff(want.step, "evaluation", "present", "missing")
    for f in EVAL_FIELDS:
        a, b = float(getattr(want, f)), float(getattr(got, f))
        if not _same(np.array([a]), np.array([b]), tol)[0]:
            return _diff(want.step, f, a, b)
    return None


def _alarm_diff(recorded: list[Event], got: list[Event], n: int) -> VerifyResult | None:
    want = [(e.step, e.name) for e in recorded if e.kind == "alarm" and e.step < n]
    have = [(e.step, e.name) for e in got if e.kind == "alarm" and e.step < n]
    for a, b in zip(want, have, strict=False):
        if a != b:
            return _diff(min(a[0], b[0]), "alarm", f"{a[1]} at step {a[0]}",
                         f"{b[1]} at step {b[0]}")
    if len(want) != len(have):
        extra = want[len(have)] if len(want) > len(have) else have[len(want)]
        w = f"{extra[1]} at step {extra[0]}" if len(want) > len(have) else "none"
        g = "none" if len(want) > len(have) else f"{extra[1]} at step {extra[0]}"
        return _diff(extra[0], "alarm", w, g)
    return None


def run_verify(path: str | os.PathLike, *, tolerance: float = 0.0) -> int:
    """``descent verify FILE``: print one line, return the exit status (0, 1 or 2)."""
    result = verify(path, tolerance=tolerance)
    stream = sys.stdout if result.status != EXIT_INPUT else sys.stderr
    prefix = "" if result.status != EXIT_INPUT else "descent: error: "
    print(prefix + result.message, file=stream)
    return result.status


# -- fork -----------------------------------------------------------------------------
@dataclass
class ForkInfo:
    """Where a fork came from."""

    path: str  # the parent recording
    step: int  # the fork step: the new run continues from the parent's state here
    recording: Recording  # the parent, loaded


def fork(path: str | os.PathLike, at: int, overrides: dict[str, Any] | None = None, *,
         record: str | os.PathLike | None = None, headless: bool = False,
         announce: Callable[[], None] | None = None) -> tuple[Any, Any, ForkInfo]:
    """Rebuild a recorded run's state at step ``at``, ready to continue with new settings.

    The run is re-executed from its header with the recorded events before ``at``; its
    losses up to ``at`` are checked against the recording (a fork of a run that does not
    reproduce would be a lie). The parent's rescues and control changes *at* ``at`` were
    applied before step ``at`` ran, so they are part of its state there: they are applied
    again (an automatic rescue lands on whatever step its chunk ended at, so it can fall
    exactly on a fork step), then the overrides. The new recording (``record``) starts
    with the parent's steps, evaluations and events before ``at`` (so it replays and
    verifies on its own), names the parent and ``at`` in its header, and records those
    changes and the overrides as events at step ``at``.

    Args:
        path: the parent recording.
        at: the fork step, 0 <= at <= the parent's steps.
        overrides: new settings: lr, reg, batch_size, loss, optimizer, on_diverge
            (applied as controls at ``at``) and steps (how many more steps to run;
            default: up to the parent's --steps, else until stopped).
        record: where to write the fork's recording; None records nothing.
        headless: a headless fork never pauses on an alarm ("pause" becomes "stop").
        announce: called once the request is known to be valid, before the (possibly
            long) re-execution.

    Returns:
        (trainer at step ``at``, recorder or None, :class:`ForkInfo`).

    Raises:
        VerifyInputError: unreadable parent, missing dataset, bad step or override, or the
            re-execution does not reproduce the parent.
    """
    from engine.trainer import Trainer

    overrides = dict(overrides or {})
    rec, dataset, config = load_source(path)
    if not 0 <= at <= rec.steps:
        raise VerifyInputError(f"--at {at} is outside the recording (0..{rec.steps} steps)")
    more = overrides.pop("steps", None)
    unknown = set(overrides) - set(FORK_FIELDS)
    if unknown:
        raise VerifyInputError(f"cannot change {', '.join(sorted(unknown))} in a fork "
                               f"(only {', '.join(FORK_FIELDS)} and steps)")
    for name, value in overrides.items():  # at once, not after re-executing `at` steps
        if value is not None:
            try:
                overrides[name] = validate_control(name, value, dataset.num_train)
            except ConfigError as e:
                raise VerifyInputError(f"fork: {e}") from None
    if announce is not None:
        announce()
    script = [e for e in rec.events if e.step < at]
    # a harmless scripted event at `at` makes the trainer stop its chunks exactly there
    boundary = Event(at, "pause", "fork", detail="fork point")
    try:
        trainer = Trainer(config.replace(steps=None), dataset, script=[*script, boundary])
    except ConfigError as e:
        raise VerifyInputError(f"recorded config is invalid: {e}") from None
    _run_to(trainer, at)
    got = trainer.history.snapshot()
    for metric, want, have in (("data_loss", rec.data_loss[:at], got.data_loss[:at]),
                               ("reg_loss", rec.reg_loss[:at], got.reg_loss[:at])):
        k = _first_diff(want, have, 0.0)
        if k is not None:
            raise VerifyInputError(f"re-execution differs from the recording at step {k} "
                                   f"({metric}); run `descent verify {path}`")
    trainer.end_script()
    parent_steps = config.steps
    total = at + more if more is not None else (
        parent_steps if parent_steps is not None and parent_steps > at else None)
    trainer.config = trainer.config.replace(steps=total)
    recorder = None
    if record is not None:
        # the header holds the run's *initial* settings: verify re-executes from step 0
        recorder = Recorder(record, config.replace(steps=total), dataset,
                            parent={"path": str(path), "step": at})
        recorder.write_prefix(rec, at)
        recorder.on_start(trainer)
        trainer.observers.append(recorder)
    for ev in rec.events:  # the parent's state at `at` (see above), recorded as the fork's
        if ev.step == at and ev.kind == "rescue":
            trainer.send("rescue", ev.value)  # the recorded lr, whatever rule made it
        elif ev.step == at and ev.kind == "control":
            trainer.send(ev.name, ev.value)
    if headless and overrides.get("on_diverge", trainer.config.on_diverge) == "pause":
        overrides["on_diverge"] = "stop"
    mode = overrides.pop("on_diverge", None)
    if mode is not None:
        trainer.send("on_diverge", mode)
    if trainer.alarm is not None:
        # An alarm stands at `at` that the parent answered later or not at all (a script
        # records alarms but does not react to them): the fork's --on-diverge answers it
        # now, before the fork's other settings, so a rescue restores the healthy weights
        # and the lr asked for still applies. It used to stay DIVERGED for good, and no
        # later alarm could fire.
        trainer.send("answer_alarm")
    for name, value in overrides.items():
        if value is not None:
            trainer.send(name, value)
    return trainer, recorder, ForkInfo(str(path), at, rec)


def run_fork(args: Any, overrides: dict[str, Any]) -> int:
    """``descent fork FILE --at STEP [options]``: the CLI's fork, dashboard or headless.

    Args:
        args: the parsed fork arguments (file, at, record, no_record, headless, json).
        overrides: the train options given (lr, reg, batch_size, loss, optimizer,
            on_diverge, steps).

    Returns:
        The exit status (as ``descent train``; 2 when the fork cannot be built).
    """
    from tui import cli  # lazy: the CLI's headless loop and dashboard (engine stays UI-free)

    record = None
    if not getattr(args, "no_record", False):
        if getattr(args, "record", None):
            record = Path(args.record).expanduser()
        else:
            stem = Path(args.file).stem
            record = unique_path(cli.RECORDINGS_DIR / f"{stem}_fork{args.at}.jsonl")

    def make(progress: Any = None) -> Any:
        try:
            trainer, _, _ = fork(args.file, args.at, overrides, record=record,
                                 headless=args.headless)
        except VerifyInputError as e:
            raise cli.UsageError(str(e)) from None
        return trainer

    if not args.headless:
        return cli._run_dashboard(make)  # noqa: SLF001 - the CLI's own helper
    def announce() -> None:
        if args.json is not True:
            print(f"descent: re-executing {args.file} up to step {args.at} ...",
                  file=sys.stderr)

    try:
        trainer, recorder, _ = fork(args.file, args.at, overrides, record=record,
                                    headless=True, announce=announce)
    except VerifyInputError as e:
        raise cli.UsageError(str(e)) from None
    return cli.run_headless(trainer, recorder, json_out=args.json,
                            eval_test=getattr(args, "eval_test", False))
