"""Pilot tests of the dashboard with a real Trainer on the tiny blobs set.

Every wait is a bounded poll (``wait_for``): ``await pilot.pause(...)`` in a loop until a
condition holds, failing after a fixed number of iterations. No assertion depends on
how fast anything runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, ConfigError
from engine.trainer import Trainer
from tui.app import DescentApp
from tui.screens.dashboard import LiveDashboard
from tui.screens.error import ErrorScreen
from tui.screens.help import HelpScreen
from tui.widgets.alarm_banner import AlarmBanner
from tui.widgets.controls import ControlsPanel
from tui.widgets.editor import ControlEditor
from tui.widgets.event_log import EventLog
from tui.widgets.status_bar import StatusBar

POLLS = 1500
"""Iterations of a bounded wait (× POLL_SECONDS = at most 30 s on a loaded machine)."""
POLL_SECONDS = 0.02


async def wait_for(pilot: Any, cond: Any, what: str, polls: int = POLLS) -> None:
    """Poll ``cond()`` between pilot pauses; fail naming ``what`` after ``polls`` tries
    or ``polls * POLL_SECONDS`` seconds, whichever comes first (a bound, not a measure)."""
    deadline = time.monotonic() + polls * POLL_SECONDS
    for _ in range(polls):
        if cond():
            return
        if time.monotonic() > deadline:
            break
        await pilot.pause(POLL_SECONDS)
    if cond():
        return
    raise AssertionError(f"timed out waiting for {what}")


def make_app(ds: Any, *, paused: bool = True, **config: Any) -> tuple[DescentApp, list]:
    """An app whose session is a seeded Trainer on ``ds``; returns (app, [trainer])."""
    made: list[Trainer] = []

    def make_session(progress: Any) -> Trainer:
        progress(0.5, "building the trainer")
        cfg = Config(data="blobs", seed=0, eval_every=50, batch_size=64, **config)
        t = Trainer(cfg, ds)
        if paused:
            t.send("pause")  # applied before the first step runs
        made.append(t)
        return t

    return DescentApp(make_session, frozen_clock=True), made


async def started(pilot: Any, app: DescentApp, kind: type = LiveDashboard) -> Any:
    # loading may compile (or load cached) Numba kernels: allow up to 60 s; then wait for
    # the dashboard's widgets, which are mounted a moment after the screen switch (the
    # screen is app.screen before they are)
    await wait_for(pilot, lambda: isinstance(app.screen, kind)
                   and bool(app.screen.query("#loss-plot")) and bool(app.screen.query("#log")),
                   "the dashboard", 3000)
    assert isinstance(app.screen, kind)
    return app.screen


async def open_editor(pilot: Any, app: DescentApp, screen: LiveDashboard) -> ControlEditor:
    """Press e; the editor shows with the lr input focused."""
    await pilot.press("e")
    editor = screen.query_one("#editor", ControlEditor)
    assert editor.display and app.focused is not None and app.focused.id == "edit-lr"
    return editor


def post_keys(app: DescentApp, keys: list[tuple[str, str | None]]) -> None:
    """Post (key, character) pairs to the app at once, as one read from the terminal:
    none is handled before the last is queued."""
    from textual import events

    for key, char in keys:
        app.post_message(events.Key(key, char))


def controls(events: Any, name: str) -> list[Any]:
    return [e.value for e in events if e.kind == "control" and e.name == name]


def panel(app: DescentApp) -> list[str]:
    return app.screen.query_one("#controls", ControlsPanel).lines


KEY_CASES = [
    # key, control, expected value from the blobs defaults (lr 0.1 for softmax here
    # unless overridden: we pin lr and reg in the config), panel text
    ("plus", "lr", 0.2, "lr 2.00e-01"),
    ("minus", "lr", 0.05, "lr 5.00e-02"),
    ("greater_than_sign", "lr", 1.0, "lr 1.00e+00"),
    ("less_than_sign", "lr", 0.01, "lr 1.00e-02"),
    ("right_square_bracket", "reg", 0.002, "λ 2.00e-03"),
    ("left_square_bracket", "reg", 0.0005, "λ 5.00e-04"),
    ("0", "reg", 0.0, "λ 0.00e+00"),
    ("b", "batch_size", 128, "batch 128"),
    ("B", "batch_size", 32, "batch 32"),
    ("l", "loss", "svm", "loss svm"),
    ("o", "optimizer", "gd", "opt gd"),
    ("d", "on_diverge", "rescue", "on-diverge rescue"),
]


@pytest.mark.parametrize(("key", "name", "value", "text"), KEY_CASES)
async def test_each_key_sends_its_control_and_the_panel_shows_it(blobs, key, name, value, text):
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        trainer = made[0]
        await pilot.press(key)
        # the panel shows the new value at once (pending), before the trainer applies it
        assert any(line.startswith(text) for line in panel(app)), panel(app)
        await wait_for(pilot, lambda: controls(trainer.history.snapshot().events, name),
                       f"the {name} control event")
        got = controls(trainer.history.snapshot().events, name)
        assert got == [pytest.approx(value)] if isinstance(value, float) else got == [value]
        await wait_for(pilot, lambda: text in panel(app), "the confirmed panel value")
        log = app.screen.query_one("#log", EventLog).plain_lines
        assert any(text.split()[0] in line and "→" in line for line in log), log
        await pilot.press("q")
    assert app.return_code == 0


async def test_a_value_applied_and_changed_within_one_chunk_does_not_stay_pending(blobs):
    """lr ×10 applied and at once undone by an automatic rescue: the trainer never shows
    the pending value, so waiting for it left "lr 1.00e+00 …" in the panel for good, and
    the next +/- worked from that stale value instead of the trainer's lr."""
    from engine.history import Event, History

    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        screen.pending["lr"] = 1.0  # sent by ">", shown with "…"
        screen.update_controls()
        assert any(line.startswith("lr 1.00e+00 …") for line in panel(app)), panel(app)
        h = History()  # what the trainer reports: the control applied, then a rescue
        h.append_event(Event(40, "control", "lr", 1.0, 0.1, "lr 1.00e-01 → 1.00e+00"))
        h.append_event(Event(41, "rescue", "rescue", 0.1, 1.0, "restored weights"))
        screen.on_new_data(h.snapshot(), "RUNNING")
        assert screen.pending == {}
        assert screen.current("lr") == trainer.config.lr == 0.1
        assert any(line.startswith("lr 1.00e-01") and "…" not in line for line in panel(app))
        screen.pending["reg"] = 0.5  # applied, then changed again within the same chunk
        h.append_event(Event(42, "control", "reg", 0.5, 0.001, "λ"))
        h.append_event(Event(42, "control", "reg", 0.25, 0.5, "λ"))
        screen.on_new_data(h.snapshot(), "RUNNING")
        assert screen.pending == {}
        await pilot.press("q")
    assert app.return_code == 0


async def test_batch_ladder_reaches_the_full_set_and_shows_batch_full(blobs):
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        for _ in range(8):  # 64 → 128 → 256 → 512 → full (blobs has < 1024 rows)
            await pilot.press("b")
        await wait_for(pilot, lambda: "batch full" in panel(app), "batch full")
        trainer = made[0]
        await wait_for(pilot, lambda: trainer.config.batch_size == blobs.num_train,
                       "the full-set batch")
        sizes = controls(trainer.history.snapshot().events, "batch_size")
        assert sizes[-1] == blobs.num_train and sizes == sorted(sizes)
        await pilot.press("B")
        await wait_for(pilot, lambda: trainer.config.batch_size < blobs.num_train, "back down")
        await pilot.press("q")


async def test_typed_values_apply_and_invalid_ones_change_nothing(blobs):
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        editor = await open_editor(pilot, app, screen)
        assert app.focused is not None
        # an invalid value: refused beside the input, nothing sent, nothing changes
        app.focused.value = ""
        await pilot.press("minus", "3", "enter")
        assert "learning rate" in editor.message_of("lr")
        with pytest.raises(ConfigError):  # the same rule the engine applies
            from engine.config import validate_control
            validate_control("lr", "-3")
        for _ in range(10):
            await pilot.pause()
        assert trainer.config.lr == 0.1 and not controls(trainer.history.snapshot().events, "lr")
        assert "lr 1.00e-01" in panel(app)
        # a valid one is applied
        app.focused.value = ""
        await pilot.press(*"2e-3", "enter")
        await wait_for(pilot, lambda: trainer.config.lr == 0.002, "lr 2e-3 applied")
        assert editor.message_of("lr").startswith("sent")
        # batch: too large for the training set is refused beside the batch input
        await pilot.press("tab", "tab")
        assert app.focused.id == "edit-batch_size"
        app.focused.value = "99999"
        await pilot.press("enter")
        assert "larger than the training set" in editor.message_of("batch_size")
        # typing keys that are also bindings goes into the input, not to the trainer
        assert not controls(trainer.history.snapshot().events, "reg")
        await pilot.press("escape")
        assert not editor.display and app.focused is None
        await wait_for(pilot, lambda: "lr 2.00e-03" in panel(app), "panel lr 2e-3")
        await pilot.press("q")
    assert app.return_code == 0


async def test_keys_typed_at_once_into_the_editor_act_in_the_order_typed(blobs):
    """Keys read from the terminal in one go (a fast typist over SSH) reach the input
    before any is handled; the backspaces must still run before the characters after them
    (with Textual's plain Input they ran last, and "ab⌫⌫2e-3⏎" sent "ab2e")."""
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        editor = await open_editor(pilot, app, screen)
        assert app.focused is not None
        app.focused.value = "ab"  # the cursor after it
        keys = [("backspace", None), ("backspace", None), ("2", "2"), ("e", "e"),
                ("minus", "-"), ("3", "3"), ("enter", None)]
        post_keys(app, keys)
        await wait_for(pilot, lambda: trainer.config.lr == 0.002, "lr 2e-3 applied")
        assert editor.message_of("lr").startswith("sent")
        assert not controls(trainer.history.snapshot().events, "reg")
        await pilot.press("escape", "q")
    assert app.return_code == 0


async def test_keys_typed_with_the_e_that_opens_the_editor_go_into_it(blobs):
    """e and a value read from the terminal in one go: the keys after e belong to the
    editor, though it opens only once e has been handled. They used to go to the
    dashboard: the digits were dropped, the second e reopened the editor and "-" halved
    the learning rate."""
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        keys = [("e", "e"), ("2", "2"), ("e", "e"), ("minus", "-"), ("3", "3"),
                ("enter", None)]
        post_keys(app, keys)
        await wait_for(pilot, lambda: trainer.config.lr == 0.002, "lr 2e-3 applied")
        editor = screen.query_one("#editor", ControlEditor)
        assert editor.message_of("lr").startswith("sent")
        assert controls(trainer.history.snapshot().events, "lr") == [0.002]
        await pilot.press("escape")
        assert not editor.display
        await pilot.press("minus")  # the editor closed: a dashboard key again
        await wait_for(pilot, lambda: trainer.config.lr == 0.001, "lr ÷2")
        await pilot.press("q")
    assert app.return_code == 0


async def test_an_escape_fused_with_the_next_key_closes_the_editor_then_acts(blobs):
    """Esc and the key after it read together arrive as one alt+key ("\\x1bl" is alt+l):
    the editor must close and the key act on the dashboard, in order with the
    keys behind it. The plain input took "+" and ">" as text and stayed open."""
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        editor = await open_editor(pilot, app, screen)
        post_keys(app, [("alt+plus", "+"), ("greater_than_sign", ">")])
        await wait_for(pilot, lambda: trainer.config.lr == 2.0, "lr x2 then x10")
        assert not editor.display and app.focused is None
        assert controls(trainer.history.snapshot().events, "lr") == [0.2, 2.0]
        await pilot.press("q")
    assert app.return_code == 0


async def test_keys_held_for_an_input_that_never_opens_act_as_usual(blobs, monkeypatch):
    # The hold is a bound, not a trap: if the editor does not take the keys, they run as
    # dashboard keys once HOLD_SECONDS have passed.
    monkeypatch.setattr(LiveDashboard, "action_edit", lambda self: None)
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        trainer = made[0]
        post_keys(app, [("e", "e"), ("minus", "-")])
        await wait_for(pilot, lambda: trainer.config.lr == 0.05, "lr ÷2")
        await pilot.press("q")
    assert app.return_code == 0


async def test_pause_stops_the_step_counter_and_n_runs_one_step(blobs):
    app, made = make_app(blobs, paused=False, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        trainer = made[0]
        await wait_for(pilot, lambda: trainer.step > 0, "training to run")
        await pilot.press("space")
        await wait_for(pilot, lambda: trainer.state.value == "PAUSED", "PAUSED")
        step = trainer.step
        for _ in range(10):
            await pilot.pause(POLL_SECONDS)
        assert trainer.step == step
        await pilot.press("n")
        await wait_for(pilot, lambda: trainer.step == step + 1, "one step")
        for _ in range(5):
            await pilot.pause(POLL_SECONDS)
        assert trainer.step == step + 1
        status = app.screen.query_one("#status", StatusBar)
        await wait_for(pilot, lambda: f"step {step + 1}" in status.plain, "header step")
        assert status.state == "PAUSED"
        await pilot.press("space")
        await wait_for(pilot, lambda: trainer.step > step + 1, "training to resume")
        await pilot.press("q")
    assert app.return_code == 0


async def test_quit_stops_the_worker_closes_the_session_and_returns_0(blobs):
    app, made = make_app(blobs, paused=False, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        trainer = made[0]
        await wait_for(pilot, lambda: trainer.step > 0, "training to run")
        await pilot.press("q")
    assert app.return_code == 0
    assert app.stop_event.is_set() and app.run_done.is_set()  # the loop returned
    assert trainer._closed  # close() ran: final evaluation, observers told (recording)
    step = trainer.step
    assert trainer.run_chunk() >= 0 and trainer.step >= step  # still usable, not running


async def test_a_signal_in_the_loop_quits_like_q_with_the_signal_status(blobs):
    """SIGTERM or SIGHUP while the dashboard's loop runs: the handler has the loop call
    quit_after_signal, which must stop training, close the session with the signal as the
    reason, and exit. (The app's close flag used to be named _closed, Textual's own flag
    for a closed message queue: after closing the session the app could post nothing, and
    exit() from a loop callback never arrived; the dashboard froze.)"""
    import asyncio

    app, made = make_app(blobs, paused=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        trainer = made[0]

        class Reason:
            end_reason = None

        seen = Reason()
        trainer.observers.append(seen)
        asyncio.get_running_loop().call_soon(app.quit_after_signal, "SIGTERM", 143)
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 143 and trainer._closed and seen.end_reason == "SIGTERM"


def test_closing_the_session_leaves_the_app_able_to_take_messages():
    # quit closes the session, then posts the app's exit: closing must not also mark the
    # app's message queue closed (it did, by sharing Textual's attribute name _closed, and
    # the dashboard froze after a SIGTERM instead of exiting)
    from textual.message import Message

    class Nudge(Message):
        pass

    class Session:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    app = DescentApp(lambda progress: None)
    app.session = session = Session()
    assert app.close_session() == 0 and app.close_session() == 0 and session.closed == 1
    assert app.post_message(Nudge())


async def test_ctrl_c_quits_even_while_editing(blobs):
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot, app)
        await pilot.press("e")
        await pilot.press("ctrl+c")
    assert app.return_code == 0 and made[0]._closed


async def test_reset_rescue_smoothing_and_log_keys(blobs):
    app, made = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        await pilot.press("r")
        await wait_for(pilot, lambda: any(e.name == "reset" for e in
                                          trainer.history.snapshot().events), "reset event")
        before = screen.smoothing
        await pilot.press("S")
        assert screen.smoothing < before and f"smooth {screen.smoothing:g}" in panel(app)
        await pilot.press("s")
        assert screen.smoothing == before
        await pilot.press("g")
        assert screen.log_scale and "y log" in panel(app)
        await pilot.press("q")


async def test_a_huge_lr_raises_the_alarm_banner_and_R_rescues(blobs):
    app, made = make_app(blobs, paused=False, lr=0.1, reg=0.001, loss="svm")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        await wait_for(pilot, lambda: trainer.step > 300, "some healthy training")
        banner = screen.query_one("#alarm", AlarmBanner)
        assert not banner.display
        for _ in range(8):  # lr ×10 until the loss explodes; the lr before is healthy
            await pilot.press("greater_than_sign")
            lr = trainer.config.lr
            for _ in range(40):
                await pilot.pause(POLL_SECONDS)
                if trainer.state.value == "DIVERGED" or trainer.config.lr != lr:
                    break
            for _ in range(40):
                if trainer.state.value == "DIVERGED":
                    break
                await pilot.pause(POLL_SECONDS)
            if trainer.state.value == "DIVERGED":
                break
        await wait_for(pilot, lambda: trainer.state.value == "DIVERGED", "the alarm")
        await wait_for(pilot, lambda: banner.display, "the banner")
        alarm = trainer.alarm
        assert alarm is not None
        assert f"rule {alarm.rule}" in banner.message and f"step {alarm.step}" in banner.message
        assert "R rescue" in banner.message and screen.bells == 1
        # the keys' line fits an 80-column terminal (78 inside the banner's padding)
        assert len(banner.message.splitlines()[-1].replace("pause", "ignore")) <= 78
        assert screen.query_one("#status", StatusBar).state == "DIVERGED"
        for _ in range(4):  # each rescue lowers lr (÷10 or to the healthy W's); one is enough
            rescues, step = trainer.rescues, trainer.step
            await pilot.press("R")
            await wait_for(pilot, lambda r=rescues: trainer.rescues > r, "the rescue")
            await wait_for(pilot, lambda s=step: trainer.step > s + 50
                           or trainer.state.value == "DIVERGED", "training to continue")
            if trainer.state.value == "RUNNING":
                break
        assert trainer.state.value == "RUNNING" and trainer.rescues >= 1
        await wait_for(pilot, lambda: not banner.display, "the banner to go")
        log = screen.query_one("#log", EventLog).plain_lines
        assert any("ALARM" in line for line in log) and any("restored" in line for line in log)
        await pilot.press("q")
    assert app.return_code == 0


async def test_help_lists_every_key(blobs):
    app, _ = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await started(pilot, app)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        keys = {k for k, _ in app.screen.rows}
        for k in ("space", "n", "+", "-", ">", "<", "]", "[", "0", "b", "B", "l", "o", "r",
                  "e", "R", "d", "s", "S", "g", "?", "q", "ctrl+c"):
            assert k in keys, k
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("q")


async def test_a_loader_error_is_one_line_and_exits_2():
    def make_session(progress: Any) -> Any:
        progress(0.1, "loading")
        raise OSError("cifar10:/nope: no such directory (download CIFAR-10 first)")

    app = DescentApp(make_session)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), "the error")
        assert app.error_message == "cifar10:/nope: no such directory (download CIFAR-10 first)"
        await pilot.press("q")
    assert app.return_code == 2


@pytest.mark.parametrize("reports_after", [True, False])
async def test_q_while_loading_exits_at_once_and_what_loads_later_is_closed(reports_after):
    """The loader (reading data, compiling kernels) cannot be interrupted, so q does not
    wait for it: the app exits with status 0 while the loader is still blocked. A loader
    that reports progress again is stopped there (the live loader reports before it
    creates the recording); what a loader built anyway is closed by it."""
    import threading

    from tui.app import LoadingCancelled
    from tui.screens.loading import LoadingScreen

    release, built, closed, cancelled = threading.Event(), [], [], []

    class Session:
        def close(self) -> None:
            closed.append(True)

    def make_session(progress: Any) -> Any:
        progress(0.9, "compiling kernels (first run only)")
        release.wait(30)
        if reports_after:
            try:
                progress(0.95, "building the trainer")
            except LoadingCancelled:
                cancelled.append(True)
                raise
        built.append(True)
        return Session()

    app = DescentApp(make_session)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: isinstance(screen, LoadingScreen)
                       and screen.message.startswith("compiling"), "the loader's message")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0 and app.loader_busy() and built == []
    release.set()
    assert not app.loader_busy(wait=10)
    if reports_after:
        assert cancelled == [True] and built == [] and closed == []
    else:
        assert built == [True] and closed == [True]


async def test_a_session_handed_over_but_not_started_is_closed_by_q():
    """The loader hands the session over and the UI starts it from a message: a quit in
    between closes it (nothing else would)."""
    import threading

    release, closed = threading.Event(), []

    class Session:
        def close(self) -> None:
            closed.append(True)

    def make_session(progress: Any) -> Any:
        release.wait(30)
        raise RuntimeError("never gets this far")

    app = DescentApp(make_session)
    async with app.run_test(size=(80, 24)) as pilot:
        app._loaded = Session()  # as if handed over, its LoadFinished not yet handled
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    release.set()
    assert closed == [True] and app.return_code == 0


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (200, 60)])
async def test_panels_never_overlap(blobs, size):
    app, _ = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=size) as pilot:
        screen = await started(pilot, app)
        await pilot.press("e")  # the editor is the tallest state
        await pilot.pause()
        ids = ["#status", "#loss-plot", "#acc-plot", "#side", "#editor", "#hints"]
        regions = [screen.query_one(i).region for i in ids if screen.query_one(i).display]
        for r in regions:
            assert r.area > 0 and r.right <= size[0] and r.bottom <= size[1]
        for i, a in enumerate(regions):
            for b in regions[i + 1 :]:
                assert not a.overlaps(b), (a, b)
        await pilot.press("escape", "q")


async def test_a_small_terminal_says_so_and_recovers_on_resize(blobs):
    app, _ = make_app(blobs, lr=0.1, reg=0.001)
    async with app.run_test(size=(50, 12)) as pilot:
        screen = await started(pilot, app)
        msg = screen.query_one("#too-small")
        await wait_for(pilot, lambda: msg.display and "need at least 60×16, have 50×12"
                       in str(msg.content), "the too-small message")
        assert not screen.query_one("#loss-plot").display or screen.has_class("-too-small")
        await pilot.resize_terminal(100, 30)
        await wait_for(pilot, lambda: not screen.has_class("-too-small"), "normal layout")
        assert screen.query_one("#loss-plot").region.area > 0
        await pilot.press("q")


# -- replay ------------------------------------------------------------------------------
@pytest.fixture
def recording(blobs, tmp_path):
    """A 1000-step recording with an lr change at 300 and a loss change at 600."""
    from engine.history import Event
    from engine.recording import Recorder

    cfg = Config(data="blobs", seed=0, steps=1000, eval_every=100, batch_size=64,
                 lr=0.1, reg=0.001).resolved(blobs)
    path = tmp_path / "run.jsonl"
    rec = Recorder(path, cfg, blobs)
    script = [Event(300, "control", "lr", 0.05), Event(600, "control", "loss", "svm")]
    t = Trainer(cfg, blobs, observers=[rec], script=script)
    t.run()
    t.close()
    rec.close()
    return path


async def test_replay_keys_seek_and_jump_and_training_keys_are_inactive(recording):
    from engine.replay import Replayer
    from tui.screens.goto import GotoScreen
    from tui.screens.replay import ReplayDashboard

    replayer = Replayer(recording)
    app = DescentApp(lambda progress: replayer, frozen_clock=True)  # frozen: no playback
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app, ReplayDashboard)
        status = screen.query_one("#status", StatusBar)
        await pilot.press("end")
        assert replayer.position == 1000 and "step 1000/1000" in status.plain
        await pilot.press("home")
        assert replayer.position == 0
        await pilot.press("right")
        assert replayer.position == 10
        await pilot.press("up")
        assert replayer.position == 110
        await pilot.press("right_square_bracket")  # next mark: the lr change
        assert replayer.position == 300
        assert "lr 5.00e-02" in panel(app)
        await pilot.press("right_square_bracket")
        assert replayer.position == 600 and "loss svm" in panel(app)
        await pilot.press("left_square_bracket")
        assert replayer.position == 300 and "loss softmax" in panel(app)
        await pilot.press("n")
        assert replayer.position == 400
        await pilot.press("p")
        assert replayer.position == 300
        speed = replayer.speed
        await pilot.press("full_stop")
        assert replayer.speed is not None and speed is not None and replayer.speed > speed
        await pilot.press("colon")
        await wait_for(pilot, lambda: isinstance(app.screen, GotoScreen), "the step prompt")
        await pilot.press(*"5000", "enter")  # out of range: refused, prompt stays
        assert isinstance(app.screen, GotoScreen)
        app.focused.value = ""
        await pilot.press(*"750", "enter")
        await wait_for(pilot, lambda: app.screen is screen, "the prompt to close")
        assert replayer.position == 750
        await wait_for(pilot, lambda: "step 750/1000" in status.plain, "header step 750")
        await pilot.press("plus", "b", "l")  # live-only keys: nothing happens
        assert replayer.position == 750 and "lr 5.00e-02" in panel(app)
        log = screen.query_one("#log", EventLog).plain_lines
        assert any("lr 1.00e-01 → 5.00e-02" in line for line in log), log
        # read in one go: the digits reach the prompt
        post_keys(app, [("colon", ":"), ("2", "2"), ("5", "5"), ("0", "0"), ("enter", None)])
        await wait_for(pilot, lambda: replayer.position == 250, "a seek to 250")
        assert app.screen is screen and "lr 1.00e-01" in panel(app)
        post_keys(app, [("colon", ":"), ("alt+n", "n")])  # ":", then Esc fused with n
        await wait_for(pilot, lambda: replayer.position == 300, "the next evaluation")
        assert app.screen is screen
        await pilot.press("q")
    assert app.return_code == 0


async def test_replay_of_a_fork_overlays_the_parent_curve(tmp_path):
    from engine.replay import Replayer
    from engine.verify import fork
    from tui.screens.replay import ReplayDashboard
    from tui.widgets.loss_plot import LossPlot

    example = Path(__file__).resolve().parent.parent / "recordings" / "example.jsonl"
    child = tmp_path / "fork.jsonl"
    trainer, recorder, _ = fork(example, 500, {"lr": 1e-7, "steps": 100}, record=child,
                                headless=True)
    trainer.run()
    trainer.close()
    app = DescentApp(lambda progress: Replayer(child))
    async with app.run_test(size=(100, 30)) as pilot:
        plot = (await started(pilot, app, ReplayDashboard)).query_one("#loss-plot", LossPlot)
        assert plot.parent_curve is not None and plot.parent_curve[0][0] == 500
        await pilot.press("end")
        await wait_for(pilot, lambda: "parent@500" in plot._title(
            plot._snap, "", plot.smoother.beta) if plot._snap else False, "parent in title")
        await pilot.press("q")


async def test_plots_follow_the_duty_cycle_but_a_new_marker_redraws_at_once(blobs, monkeypatch):
    import tui.screens.dashboard as dashboard
    from tui.widgets.loss_plot import LossPlot

    # No time-based rebuilds at all: only markers (and view keys) may redraw the plots.
    monkeypatch.setattr(dashboard, "PLOT_DUTY", 1e9)
    monkeypatch.setattr(dashboard, "MAX_PLOT_INTERVAL", 1e9)
    app, made = make_app(blobs, paused=False, lr=0.1, reg=0.001)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(pilot, app)
        trainer = made[0]
        plot = screen.query_one("#loss-plot", LossPlot)
        await wait_for(pilot, lambda: plot.builds >= 1 and trainer.step > 0, "a first frame")
        builds, step = plot.builds, trainer.step
        status = screen.query_one("#status", StatusBar)
        await wait_for(pilot, lambda: f"step {step}" not in status.plain
                       and trainer.step > step + 100, "new steps on screen")
        assert plot.builds == builds  # data changed, but the duty cycle holds the plot
        await pilot.press("plus")
        await wait_for(pilot, lambda: controls(trainer.history.snapshot().events, "lr"),
                       "the lr control event")
        await wait_for(pilot, lambda: plot.builds > builds, "the plot redrawn for the marker")
        await pilot.press("q")
    assert app.return_code == 0
