"""The ``descent`` command line: train (dashboard or headless), replay, verify, fork,
gradcheck and bench.

Exit status (DESIGN.md): 0 success; 2 bad usage or bad input (one line on stderr, no
traceback); 3 a headless run stopped because it diverged; 130 interrupted (Ctrl-C;
SIGTERM and SIGHUP also end a run cleanly, with 143 and 129). Only the dashboard imports
textual, and only when it opens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130
SUBCOMMANDS = ("train", "replay", "verify", "fork", "gradcheck", "bench")
RECORDINGS_DIR = Path("recordings")
"""Where recordings go by default, relative to the working directory."""


class UsageError(Exception):
    """Bad usage or bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"descent: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 1e-3)") from None


def _add_train_options(p: argparse.ArgumentParser, *, fork: bool = False) -> None:
    """Options shared by ``train`` and ``fork`` (for fork every default is 'as recorded')."""
    from engine.config import LOSSES, ON_DIVERGE, OPTIMIZERS

    d = argparse.SUPPRESS if fork else None
    g = p.add_argument_group("training")
    if not fork:
        g.add_argument("--data", default="synthetic", metavar="SPEC",
                       help="synthetic (default), synthetic:N, spiral, blobs, cifar10:DIR, "
                            "mnist:DIR or npz:FILE")
        g.add_argument("--num-val", type=_positive_int, default=None, metavar="N",
                       help="validation rows split off the training set")
    g.add_argument("--loss", choices=LOSSES, default=d, help="svm or softmax (default softmax)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d,
                   help="sgd (mini-batch), gd (full batch), random (random search), "
                        "local (random local search)")
    g.add_argument("--lr", type=_number, default=d, metavar="F",
                   help="learning rate (default: suggested for the dataset and loss)")
    g.add_argument("--reg", type=_number, default=d, metavar="F",
                   help="L2 regularization strength λ (default: suggested for the dataset)")
    g.add_argument("--batch", type=_positive_int, default=d, metavar="N",
                   help="batch size (default 256)")
    g.add_argument("--steps", type=_positive_int, default=d, metavar="N",
                   help="stop after N steps (the dashboard otherwise runs until quit)")
    if not fork:
        g.add_argument("--seed", type=_positive_int, default=0, metavar="N",
                       help="random seed for W's init, batches and proposals (default 0)")
        g.add_argument("--eval-every", type=_positive_int, default=None, metavar="N",
                       help="steps between evaluations (default 200)")
    g.add_argument("--on-diverge", choices=ON_DIVERGE, default=None,
                   help="what an alarm does (default: pause in the dashboard, stop headless)")
    r = p.add_argument_group("recording and output")
    rec = r.add_mutually_exclusive_group()
    rec.add_argument("--record", metavar="PATH", default=None,
                     help="record to PATH (default: a new file in recordings/)")
    rec.add_argument("--no-record", action="store_true", help="do not record this session")
    r.add_argument("--headless", action="store_true",
                   help="no dashboard: progress on stderr, summary on stdout")
    r.add_argument("--json", action="store_true",
                   help="with --headless: print exactly one JSON object on stdout at the end")
    r.add_argument("--eval-test", action="store_true",
                   help="with --headless: also evaluate the final W on the held-out test set "
                        "(test_loss, test_acc in the summary)")


def build_parser() -> argparse.ArgumentParser:
    from engine import __version__

    parser = _Parser(
        prog="descent",
        description="Train a linear image classifier live in the terminal and steer it while "
                    "it learns. With no subcommand, `descent` is `descent train`.",
    )
    parser.add_argument("--version", action="version", version=f"descent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser("train", help="train (the default): dashboard, or --headless")
    _add_train_options(train)

    replay = sub.add_parser("replay", help="replay a recording in the dashboard")
    replay.add_argument("file", metavar="FILE", help="a recording (.jsonl) to play back")
    replay.add_argument("--follow", action="store_true",
                        help="keep reading as another process appends (like tail -f)")
    replay.add_argument("--headless", action="store_true", help="print the summary only")
    replay.add_argument("--json", action="store_true", help="with --headless: as JSON")

    verify = sub.add_parser("verify", help="re-run a recording and compare every number")
    verify.add_argument("file", metavar="FILE", help="a recording (.jsonl) to re-run and compare")
    verify.add_argument("--tolerance", type=_number, default=0.0, metavar="F",
                        help="accept relative differences up to F (default 0: bit for bit)")

    fork = sub.add_parser("fork", help="continue a recording from a step with new settings")
    fork.add_argument("file", metavar="FILE", help="the recording (.jsonl) to continue from")
    fork.add_argument("--at", type=_positive_int, required=True, metavar="STEP",
                      help="the step to continue from")
    _add_train_options(fork, fork=True)

    grad = sub.add_parser("gradcheck", help="analytic vs numerical gradient")
    grad.add_argument("--loss", choices=("svm", "softmax"), default="softmax")
    grad.add_argument("--data", default="synthetic:2000", metavar="SPEC",
                      help="dataset to draw rows from (default synthetic:2000)")
    grad.add_argument("--reg", type=_number, default=None, metavar="F",
                      help="λ (default: suggested for the dataset)")
    grad.add_argument("--coords", type=_positive_int, default=20, metavar="N",
                      help="coordinates to check (default 20)")
    grad.add_argument("--seed", type=_positive_int, default=0, metavar="N")

    bench = sub.add_parser("bench", help="engine speed against the numpy reference")
    bench.add_argument("--repeats", type=_positive_int, default=None, metavar="N",
                       help="timed runs per number (default 5; the median is shown)")
    bench.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="kernel threads (default: all cores unless the machine is busy)")
    bench.add_argument("--no-compile", action="store_true",
                       help="skip the cold/warm compile-time measurement")
    return parser


def _normalize_argv(argv: Sequence[str]) -> list[str]:
    """``descent [train options]`` means ``descent train [train options]``."""
    argv = list(argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        return ["train", *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``descent`` console script. Returns the exit status."""
    args = build_parser().parse_args(_normalize_argv(sys.argv[1:] if argv is None else argv))
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": cmd_train, "replay": cmd_replay, "verify": cmd_verify, "fork": cmd_fork,
        "gradcheck": cmd_gradcheck, "bench": cmd_bench,
    }
    try:
        return handlers[args.command](args)
    except UsageError as e:
        print(f"descent: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("descent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- train ------------------------------------------------------------------------------
def _config_from_args(args: argparse.Namespace) -> Any:
    from engine.config import Config

    kw: dict[str, Any] = {
        "data": args.data, "loss": args.loss or "softmax",
        "optimizer": args.optimizer or "sgd", "lr": args.lr, "reg": args.reg,
        "batch_size": 256 if args.batch is None else args.batch, "seed": args.seed,
        "steps": args.steps, "num_val": args.num_val,
        "on_diverge": args.on_diverge or ("stop" if args.headless else "pause"),
    }
    if args.eval_every is not None:
        kw["eval_every"] = args.eval_every
    return Config(**kw)


def _record_path(args: argparse.Namespace, loss: str) -> Path | None:
    if args.no_record:
        return None
    if args.record:
        return Path(args.record).expanduser()
    from engine.recording import unique_path

    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    return unique_path(RECORDINGS_DIR / f"{stamp}_{loss}.jsonl")


def load_data(spec: str, num_val: int | None, progress: Callable[[float, str], None] | None
              ) -> Any:
    """Load a dataset, turning its errors into one-line usage errors."""
    from engine.data import DatasetError, load_dataset

    try:
        return load_dataset(spec, num_val=num_val, progress=progress)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    except MemoryError:
        raise UsageError(f"not enough memory to load {spec}; try a smaller dataset") from None


def build_trainer(config: Any, dataset: Any, record: Path | None, *, parent: Any = None,
                  script: Any = None) -> tuple[Any, Any]:
    """A Trainer with a Recorder attached (when ``record`` is a path)."""
    from engine.config import ConfigError
    from engine.trainer import Trainer

    observers = []
    recorder = None
    try:
        config = config.resolved(dataset)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if record is not None:
        from engine.recording import Recorder

        recorder = Recorder(record, config, dataset, parent=parent)
        observers.append(recorder)
    return Trainer(config, dataset, observers=observers, script=script), recorder


class _Signals:
    """Turn SIGTERM and SIGHUP (a dropped SSH link) into a clean stop, like Ctrl-C.

    ``in_loop(signum)`` is called on the asyncio loop running in this thread, if one is:
    the dashboard quits from there, as ``q`` does. Otherwise ``first`` runs in the handler
    before the KeyboardInterrupt is raised: the dashboard passes its stop request, since on
    the way out its event loop waits for the training thread, which must be told to stop
    first.

    ``polled``: Ctrl-C too, and the first signal only sets :attr:`signum`, which the
    caller's loop checks between chunks of steps (the headless run). An exception raised
    wherever the signal happens to land can land inside the trainer between its history
    and its recorder, or inside Numba loading a kernel from its cache, which it leaves
    broken (the next kernel call then fails with a traceback). A second signal raises
    KeyboardInterrupt at once, for a run that does not stop soon enough."""

    def __init__(self, first: Callable[[], None] | None = None,
                 in_loop: Callable[[int], None] | None = None, *,
                 polled: bool = False) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._first = first
        self._in_loop = in_loop
        self._polled = polled

    def __enter__(self) -> _Signals:
        signals = (signal.SIGTERM, signal.SIGHUP) + ((signal.SIGINT,) if self._polled else ())
        for s in signals:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except (ValueError, OSError):  # not the main thread, or unsupported
                pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._polled:
            if self.signum is None:
                self.signum = signum
                return
            raise KeyboardInterrupt
        self.signum = signum
        if signum == signal.SIGHUP:
            # A hang-up comes with SIGCONT, which the dashboard's driver answers by
            # re-entering the screen, on an event loop that is shutting down by then
            # (RuntimeError, exit 1). There is no terminal left to resume.
            signal.signal(signal.SIGCONT, signal.SIG_DFL)
        if self._in_loop is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                # The dashboard's event loop is running: have it quit as q does. Raising
                # here would end whichever task the signal interrupted, reported on the
                # way out as "Task exception was never retrieved" with a traceback on the
                # terminal (1 SIGTERM in 4); raised from a loop callback instead, every
                # task still pending was reported cancelled.
                loop.call_soon_threadsafe(self._in_loop, signum)
                return
        if self._first is not None:
            self._first()
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum if self.signum else EXIT_INTERRUPTED


class _Progress:
    """Headless progress on stderr: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int | None) -> None:
        self.tty = sys.stderr.isatty()
        self.total = total
        self._last = 0.0
        self._bar: Any = None
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]step {task.completed:>8.0f}"), BarColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._task = self._bar.add_task("train", total=total, info="")
            self._bar.start()

    def update(self, trainer: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.tty else 1.0):
            return
        self._last = now
        s = trainer.summary()
        acc = f", val_acc {s['val_acc']:.3f}" if s["val_acc"] is not None else ""
        loss = s["loss"] if s["loss"] is not None else math.nan
        info = f"loss {loss:.4f}{acc}, {trainer.steps_per_s:,.0f} steps/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=trainer.step, info=info)
        else:
            print(f"step {trainer.step}: {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _loading_progress() -> Callable[[float, str], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] > 0.1 or fraction >= 1:
            last[0] = now
            bar = "#" * int(30 * fraction)
            print(f"\r{message:<40} [{bar:<30}] {fraction:4.0%}", end="", file=sys.stderr)
            if fraction >= 1:
                print(file=sys.stderr)
    return report


def cmd_train(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.json and not args.headless:
        raise UsageError("--json needs --headless")
    if args.eval_test and not args.headless:
        raise UsageError("--eval-test needs --headless")
    if not args.headless:
        return _run_dashboard(lambda progress: _make_live_session(args, config, progress))
    dataset = load_data(config.data, config.num_val, _loading_progress())
    _warm_kernels()
    trainer, recorder = build_trainer(config, dataset, _record_path(args, config.loss))
    return run_headless(trainer, recorder, json_out=args.json, eval_test=args.eval_test)


COMPILING = "compiling kernels (first run only)"
"""What the dashboard's loading screen and a headless run on a terminal say while the
kernels load (seconds the first time, a Numba compile; a fraction of one from the cache)."""


def _warm_kernels() -> None:
    """Load the kernels from Numba's cache (compile them, the first time) before the
    recording opens, as the dashboard's loader does: a Ctrl-C meanwhile leaves no
    recording behind, and the first chunk's speed is training, not loading."""
    from engine import kernels

    tty = sys.stderr.isatty()
    if tty:
        print(f"{COMPILING} ...", end="", file=sys.stderr, flush=True)
    try:
        kernels.warmup()
    finally:
        if tty:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


def run_headless(trainer: Any, recorder: Any, *, json_out: bool, eval_test: bool = False
                 ) -> int:
    """Run a trainer to its end in this thread; print the summary; return the exit status."""
    progress = _Progress(trainer.config.steps)
    status = EXIT_OK
    with _Signals(polled=True) as sig:
        try:
            # Ctrl-C, SIGTERM or SIGHUP ends the run after the chunk in progress (~20 ms);
            # a second one raises KeyboardInterrupt wherever it lands.
            while trainer.state.value != "FINISHED" and sig.signum is None:
                trainer.run_chunk()
                progress.update(trainer)
        except KeyboardInterrupt:
            pass
        finally:
            if sig.signum is not None:
                status = sig.exit_status
                if recorder is not None:  # the recording's summary says how it ended
                    recorder.end_reason = signal.Signals(sig.signum).name
            progress.update(trainer, force=True)
            progress.close()
            summary = trainer.close()
    if recorder is not None:
        summary["recording"] = str(recorder.path)
        if getattr(recorder, "error", None):
            print(f"descent: recording incomplete: {recorder.error}", file=sys.stderr)
    if eval_test:
        test = trainer.evaluate_test()
        if test is None:
            print(f"descent: {trainer.dataset.spec} has no test set", file=sys.stderr)
        summary = {**summary, **(test or {"test_loss": None, "test_acc": None})}
    if summary["diverged"] and status == EXIT_OK:
        alarm = trainer.alarm
        print(f"descent: diverged at step {alarm.step}: {alarm.detail} "
              f"(lower --lr, or use --on-diverge rescue)", file=sys.stderr)
        status = EXIT_DIVERGED
    if status not in (EXIT_OK, EXIT_DIVERGED):
        print(f"descent: interrupted at step {trainer.step}", file=sys.stderr)
    _print_summary(summary, json_out)
    return status


def _print_summary(summary: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print(json.dumps(_nulls(summary), allow_nan=False, default=str))
        return
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    for k, v in summary.items():
        print(f"{k:>12}  {fmt(v)}")


def _nulls(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a non-finite number (a diverged loss) becomes null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}


# -- the dashboard ------------------------------------------------------------------------
def _make_live_session(args: argparse.Namespace, config: Any,
                       progress: Callable[[float, str], None]) -> Any:
    from engine import kernels

    dataset = load_data(config.data, config.num_val, progress)
    progress(0.9, COMPILING)
    kernels.warmup()
    progress(0.95, "building the trainer")  # raises if the user quit meanwhile: no recording
    trainer, _ = build_trainer(config, dataset, _record_path(args, config.loss))
    progress(1.0, "ready")
    return trainer


def _run_dashboard(make_session: Callable[[Callable[[float, str], None]], Any]) -> int:
    if not sys.stdout.isatty() and not os.environ.get("DESCENT_FORCE_TUI"):
        raise UsageError("the dashboard needs a terminal; use --headless to run without one")
    from tui.app import DescentApp

    def guarded(progress: Callable[[float, str], None]) -> Any:
        try:
            return make_session(progress)
        except UsageError as e:
            raise RuntimeError(str(e)) from None

    app = DescentApp(guarded)

    def quit_after(signum: int) -> None:
        app.quit_after_signal(signal.Signals(signum).name, 128 + signum)

    with _Signals(first=app.stop_soon, in_loop=quit_after) as sig:
        try:
            status = app.run()
        except KeyboardInterrupt:
            status = sig.exit_status
        finally:
            if sig.signum is not None:  # q and Ctrl-C stop cleanly inside the app
                app.end_after_signal(signal.Signals(sig.signum).name)
    code = EXIT_OK if status is None else int(status)
    if sig.signum is not None:  # however the app's loop ended after the signal
        code = sig.exit_status
    if sig.signum != signal.SIGHUP:  # after a hang-up there is no terminal to tell
        _tell(app.exit_lines())
    _leave_loader(app, code)
    return code


def _tell(lines: Sequence[str]) -> None:
    """Print lines on stderr as ``descent: ...``; a terminal that has gone is not an
    error (there is nobody left to tell)."""
    try:
        for line in lines:
            print(f"descent: {line}", file=sys.stderr, flush=True)
    except OSError:
        pass


LOADER_GRACE_SECONDS = 1.0
"""After a quit during loading, how long the process waits for the loader to finish (it
closes what it built) before it ends without it."""


def _leave_loader(app: Any, code: int) -> None:
    """If the user quit while the session was loading, end the process without the loader
    (after a moment for it to finish and close what it built). A Numba compile cannot be
    interrupted, and finalizing the interpreter under a thread still inside LLVM is not
    safe. No recording is open while kernels compile, and Numba writes each cache file
    whole (a temporary file, then a rename), so nothing is lost or left half-written: the
    next run compiles what is missing."""
    if app.loader_busy(wait=LOADER_GRACE_SECONDS):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- replay, verify, fork -------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from engine.recording import RecordingError

    if args.json and not args.headless:
        raise UsageError("--json needs --headless")
    try:
        if args.headless:
            from engine.replay import replay_summary

            _print_summary(replay_summary(args.file), args.json)
            return EXIT_OK
        from engine.replay import Replayer

        # Fail fast, before the screen opens; the dashboard then shows this Replayer, so a
        # 10^6-step file is parsed once (opening stays under 2 s).
        replayer = Replayer(args.file, follow=args.follow)
    except (RecordingError, OSError) as e:
        raise UsageError(_one_line(e, args.file)) from None
    return _run_dashboard(lambda progress: replayer)


def cmd_verify(args: argparse.Namespace) -> int:
    from engine.verify import run_verify

    return int(run_verify(args.file, tolerance=args.tolerance))


def cmd_fork(args: argparse.Namespace) -> int:
    from engine.verify import run_fork

    overrides = {k: getattr(args, k) for k in
                 ("loss", "optimizer", "lr", "reg", "batch", "steps") if hasattr(args, k)}
    if "batch" in overrides:
        overrides["batch_size"] = overrides.pop("batch")
    if args.on_diverge:
        overrides["on_diverge"] = args.on_diverge
    return int(run_fork(args, overrides))


def _one_line(e: BaseException, path: str) -> str:
    if isinstance(e, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(e, OSError):
        return f"{path}: {e.strerror or e}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# -- gradcheck, bench ---------------------------------------------------------------------
def cmd_gradcheck(args: argparse.Namespace) -> int:
    import numpy as np

    from engine import gradcheck

    dataset = load_data(args.data, None, None)
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(dataset.num_train, size=min(300, dataset.num_train), replace=False)
    X = dataset.X_train[np.sort(rows)]
    y = dataset.y_train[np.sort(rows)]
    reg = args.reg if args.reg is not None else float(dataset.defaults.get("reg", 0.0))
    scale = float(dataset.defaults.get("init_scale", 1e-3))
    W = (scale * rng.standard_normal((X.shape[1], dataset.num_classes))).astype(np.float32)
    report = gradcheck.check(X, y, W, reg, args.loss, num_coords=args.coords, seed=args.seed)
    print(gradcheck.format_report(report))
    return EXIT_OK if report.passed else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from engine import bench, recording, trainer
    from tui import bench_ui

    bench.add_section("recording (size, load time, overhead at B=256)",
                      recording.bench_recording)
    bench.add_section("trainer bookkeeping (headless): per step, beside the steps' own time",
                      trainer.bench_bookkeeping)
    bench.add_section("dashboard", bench_ui.bench_dashboard)
    bench.add_section("start-up (real command in a pty)", bench_ui.bench_startup)
    bench.add_section("datasets", bench_ui.bench_data)
    argv = ["--no-compile"] if args.no_compile else []
    if args.repeats is not None:  # 0 too: bench.main rejects it in one line
        argv += ["--repeats", str(args.repeats)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return int(bench.main(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
