"""The descent dashboard application.

``DescentApp(make_session)`` shows a loading screen while ``make_session(progress)`` runs
in a loader thread (dataset, kernel compilation, trainer and recorder), then the live or
replay dashboard. Quitting while it loads exits at once: a Numba compile cannot be
interrupted, so the loader is a daemon thread the app does not wait for; what it builds
after the quit is closed (``descent`` then ends the process without waiting for it either,
see ``loader_busy``). A live trainer runs in a second thread worker; the UI only reads its
History on a timer and steers it through ``session.send`` (a queue), so training never
waits for the screen. Quitting sets the stop event, waits for the worker, closes the
session (which closes the recording) and returns exit status 0. A loader that fails
shows its one-line message; leaving that screen returns 2.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import events, on, work
from textual.app import App
from textual.binding import Binding
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from tui.messages import LoadFinished, LoadProgress
from tui.screens.dashboard import Dashboard, LiveDashboard
from tui.screens.error import ErrorScreen
from tui.screens.loading import LoadingScreen

Session = Any
"""A live ``engine.trainer.Trainer`` or a replay ``engine.replay.Replayer``."""
MakeSession = Callable[[Callable[[float, str], None]], Session]
"""Builds the session; may take seconds; reports through ``progress(fraction, message)``,
which raises :class:`LoadingCancelled` once the user has quit (let it propagate)."""


class LoadingCancelled(Exception):
    """Raised by the loader's ``progress`` after the user quit: stop building the session
    (a live session's recording is not created for a run that never starts)."""
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED = 0, 2, 1
"""Exit statuses: success, bad input (the loader refused), training crashed."""
JOIN_SECONDS = 5.0
"""How long quitting waits for the training loop to return."""
HOLD_SECONDS = 0.5
"""Longest the keys after an input-opening key are held for an input that never takes
them (then they act as usual); the input normally takes them within milliseconds."""


class _Either:
    """``is_set()`` of any of several events (the trainer only calls ``is_set``)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def one_line(error: BaseException) -> str:
    """An exception as one line: its message's first line, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class DescentApp(App[int]):
    """The dashboard; ``run()`` returns the exit status."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "descent"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", key_display="ctrl+c", priority=True),
    ]

    def __init__(self, make_session: MakeSession, *, title: str = "descent",
                 frozen_clock: bool = False) -> None:
        """
        Args:
            make_session: builds the session in a worker thread (see module docstring).
            title: shown on the loading screen.
            frozen_clock: draw elapsed time and speed as fixed text (snapshot tests).
        """
        super().__init__()
        self._make_session = make_session
        self.title_text = title
        """Shown on the loading screen."""
        self.frozen_clock = frozen_clock
        """Clock-dependent text is fixed, so a screenshot is deterministic."""
        self.session: Session | None = None
        """The session, once loaded."""
        self.stop_event = threading.Event()
        """Set on quit; the training worker's loop checks it between chunks."""
        self.train_worker: Worker[Any] | None = None
        """The worker running ``session.run`` (live sessions only)."""
        self.run_done = threading.Event()
        """Set when ``session.run`` has returned (the training loop is over)."""
        self.error_message = ""
        """The one-line error shown, if any (tests read it)."""
        self._quitting = False
        self._session_closed = False
        """close_session has run (not Textual's own _closed, which says the app's message
        queue is closed: taking that name left quit unable to post its ExitApp)."""
        self._loader: threading.Thread | None = None
        self._load_lock = threading.Lock()
        self._loaded: Session | None = None
        """A session the loader handed over, until the UI starts it (or a quit closes it)."""
        self._held: list[events.Key] | None = None
        """Keys read since a key that opens an input, until it has the focus (on_event)."""

    # -- start --------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.push_screen(LoadingScreen(self.title_text))
        self._loader = threading.Thread(target=self._load, name="descent-loader", daemon=True)
        self._loader.start()

    def loader_busy(self, wait: float = 0.0) -> bool:
        """The loader thread is still running (e.g. compiling after a quit), after waiting
        up to ``wait`` seconds for it to end."""
        if self._loader is not None and wait > 0:
            self._loader.join(wait)
        return self._loader is not None and self._loader.is_alive()

    def _load(self) -> None:
        """The loader thread: run the (slow) session factory, hand the session over."""
        try:
            session = self._make_session(self._progress)
        except LoadingCancelled:
            return
        except Exception as e:  # noqa: BLE001 - shown as one line, exit status 2
            self.post_message(LoadFinished(one_line(e)))
            return
        with self._load_lock:
            if not self._quitting:
                self._loaded = session
                self.post_message(LoadFinished())
                return
        _close(session)  # the user left while we were loading

    @on(LoadFinished)
    def _load_finished(self, event: LoadFinished) -> None:
        if self._quitting:
            return
        if event.error:
            self.fail(event.error, EXIT_BAD_INPUT)
            return
        with self._load_lock:
            session, self._loaded = self._loaded, None
        if session is not None:
            self._start(session)

    def _progress(self, fraction: float, message: str) -> None:
        """Called on the loader thread: post, never block; after a quit, cancel."""
        if self._quitting:
            raise LoadingCancelled
        self.post_message(LoadProgress(float(fraction), str(message)))

    @on(LoadProgress)
    def _show_progress(self, event: LoadProgress) -> None:
        if isinstance(self.screen, LoadingScreen) and not self._quitting:
            self.screen.set_progress(event.fraction, event.text)

    def _start(self, session: Session) -> None:
        self.session = session
        kind = getattr(session, "kind", "live")
        if kind == "replay":
            from tui.screens.replay import ReplayDashboard

            self.switch_screen(ReplayDashboard(session, frozen_clock=self.frozen_clock))
        else:
            self.switch_screen(LiveDashboard(session, frozen_clock=self.frozen_clock))
            self.train_worker = self.train(session)

    @work(thread=True, exclusive=True, exit_on_error=False, group="training")
    def train(self, session: Session) -> Any:
        """The training loop, until quit (stop event or worker cancellation) or --steps."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        try:
            return session.run(_Either(self.stop_event, worker.cancelled_event))
        finally:
            self.run_done.set()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker, state = event.worker, event.state
        if worker.group == "training" and state == WorkerState.ERROR:
            if worker.error is not None and not self._quitting:
                self.fail(f"training stopped: {one_line(worker.error)}", EXIT_FAILED)

    def fail(self, message: str, exit_code: int) -> None:
        """Show ``message``; leaving that screen exits with ``exit_code``."""
        self.error_message = message
        self.stop_event.set()
        self.switch_screen(ErrorScreen(message, exit_code))

    # -- keys that open an input ---------------------------------------------------------
    async def on_event(self, event: events.Event) -> None:
        """Hold the keys typed right after a key that opens an input (the editor's ``e``,
        the replay's ``:``) until the input has the focus, then give them to it.

        The app hands each key to the widget focused when the key is read, and a screen's
        binding runs only once its key has come back up to the app. So keys read together
        with ``e`` (typed fast over SSH) went to the dashboard, not the editor: ``e1e-3⏎``
        ran ``-`` as "lr ÷2". Priority bindings (ctrl+c) still act while keys are held.
        """
        if isinstance(event, events.Key) and not event.is_forwarded:
            if self._held is not None:
                if not await self._check_bindings(event.key, priority=True):
                    self._held.append(event)
                return
            opens = getattr(self.screen, "opens_input", None)
            if self.focused is None and opens is not None and opens(event.key):
                self._start_hold([])
        await super().on_event(event)

    def _start_hold(self, held: list[events.Key]) -> None:
        self._held = held
        self.set_timer(HOLD_SECONDS, lambda: self._release_held(held))

    def hold_keys(self, first: events.Key) -> None:
        """Hold ``first`` and the keys after it until :meth:`release_held_keys` (or
        HOLD_SECONDS): an input splitting an Esc that arrived fused with the next key
        (alt+key) closes itself first, and the key then acts where the focus lands."""
        if self._held is not None:
            self._held.append(first)
        else:
            self._start_hold([first])

    def defer_key(self, key: events.Key) -> bool:
        """While keys are held, add ``key`` (read before the hold, on its way to an input
        that is closing) to them and return True."""
        if self._held is None:
            return False
        self._held.append(events.Key(key.key, key.character))
        return True

    def release_held_keys(self) -> None:
        """Handle the held keys as usual now (after the input they waited for closed)."""
        held = self._held
        if held is not None:
            self.call_later(self._release_held, held)

    def hand_held_keys_to(self, widget: Widget) -> None:
        """Give the held keys to ``widget`` (call right after ``widget.focus()``, which
        takes effect on the app's queue: so does the hand-over, after it)."""
        self.call_later(self._hand_over, widget)

    def _hand_over(self, widget: Widget) -> None:
        keys, self._held = self._held or [], None
        for key in keys:
            again = events.Key(key.key, key.character)
            again._set_forwarded()  # an unhandled key bubbles up without coming back down
            widget.post_message(again)

    async def _release_held(self, held: list[events.Key]) -> None:
        """No input claimed the keys held since ``held`` began: handle them as usual."""
        if self._held is not held:
            return
        self._held = None
        for key in held:
            await self.on_event(key)

    # -- stop ---------------------------------------------------------------------------
    def action_quit(self) -> None:  # type: ignore[override]  # sync is fine for Textual
        """q / ctrl+c: stop the worker, close the session (and its recording), exit 0."""
        code = self.screen.exit_code if isinstance(self.screen, ErrorScreen) else EXIT_OK
        self.shutdown(code)

    def shutdown(self, code: int) -> None:
        """Set the stop event, wait for the training loop to return, close, exit.

        The loop checks the event between chunks (a chunk is ~20 ms; a paused trainer
        wakes every 50 ms), so the short blocking wait here is bounded by JOIN_SECONDS.
        """
        if self._quitting:
            return
        self.stop_soon()
        if self.session is None:
            # Still loading (or it failed): nothing to stop. A session the loader handed
            # over but the UI has not started is closed here; one it builds later, by it.
            with self._load_lock:
                pending, self._loaded = self._loaded, None
            if pending is not None:
                _close(pending)
            self.exit(code, return_code=code)
            return
        if self.train_worker is not None and not self.run_done.wait(JOIN_SECONDS):
            self.error_message = "the training thread did not stop in time"
            code = code or EXIT_FAILED
        if self.close_session() != EXIT_OK and code == EXIT_OK:
            code = EXIT_FAILED
        self.exit(code, return_code=code)

    def stop_soon(self) -> None:
        """Ask the training loop (and a session still loading) to stop; safe to call from
        a signal handler. The app's loop, on its way out, waits for the training worker; a
        session the loader builds after this is closed by the loader."""
        self._quitting = True
        self.stop_event.set()

    def quit_after_signal(self, reason: str, code: int) -> None:
        """SIGTERM or SIGHUP arrived while the app's loop runs: quit as ``q`` does, with
        exit status ``code``, the recording's summary saying ``reason`` ended the run."""
        self._end_reason(reason)
        self.shutdown(code)

    def _end_reason(self, reason: str) -> None:
        for observer in getattr(self.session, "observers", ()):
            if hasattr(observer, "end_reason"):
                observer.end_reason = reason

    def end_after_signal(self, reason: str) -> None:
        """After a signal (SIGTERM, or SIGHUP from a dropped SSH link) broke out of the
        app's loop, where ``q`` would have stopped cleanly: stop the training thread and
        close the session, its recording saying ``reason`` ended it.

        Bounded like :meth:`shutdown`: a training thread that does not stop within
        JOIN_SECONDS is left alone (the recording keeps every step it flushed, without a
        summary) rather than closed under it. A session still loading is closed by the
        loader when it arrives (``_quitting``)."""
        self.stop_soon()
        if self.train_worker is not None and not self.run_done.wait(JOIN_SECONDS):
            return
        self._end_reason(reason)
        self.close_session()

    def close_session(self) -> int:
        """Close the session once; returns EXIT_OK, or EXIT_FAILED if closing failed."""
        if self._session_closed or self.session is None:
            return EXIT_OK
        self._session_closed = True
        try:
            _close(self.session)
        except Exception as e:  # noqa: BLE001 - say it, never a traceback
            self.error_message = f"closing the session failed: {one_line(e)}"
            return EXIT_FAILED
        return EXIT_OK

    def exit_lines(self) -> list[str]:
        """What to say once the app has left the terminal's alternate screen, which takes
        everything it showed with it: the error that ended the session, if one did, and
        where the session's recording is (or why it is incomplete)."""
        lines = [f"error: {self.error_message}"] if self.error_message else []
        for observer in getattr(self.session, "observers", ()):
            status_line = getattr(observer, "status_line", None)
            if callable(status_line):
                lines.append(str(status_line()))
        return lines

    @property
    def dashboard(self) -> Dashboard | None:
        """The dashboard screen, if it is showing (tests use it)."""
        for screen in self.screen_stack:
            if isinstance(screen, Dashboard):
                return screen
        return None


def _close(session: Session) -> None:
    close = getattr(session, "close", None)
    if callable(close):
        close()


def run_app(app: DescentApp, **kwargs: Any) -> int:
    """Run ``app`` and return its exit status (0 when it returned nothing)."""
    result = app.run(**kwargs)
    app.stop_event.set()
    app.close_session()
    if app.return_code not in (None, 0):
        return int(app.return_code)
    return EXIT_OK if result is None else int(result)
