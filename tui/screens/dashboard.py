"""The dashboard: header, alarm banner, loss and accuracy plots, controls, event log.

:class:`Dashboard` draws a session (a live Trainer or a Replayer) from its History on a
10 Hz timer, and redraws the plots only when the history's version (or the state, or a
view setting) changed. :class:`LiveDashboard` adds the training keys and the value
editor; :class:`ReplayDashboard` (tui/screens/replay.py) adds the playback keys.

Layout (classes set on resize): ``-narrow`` (< 100 columns: a slimmer side panel),
``-short`` (< 30 rows: a smaller accuracy plot), ``-tiny`` (< 20 rows: no accuracy plot)
and ``-too-small`` (< 60×16: only a message saying so).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Static

from engine.config import (
    BATCH_LADDER,
    LOSSES,
    ON_DIVERGE,
    OPTIMIZERS,
    ConfigError,
    validate_control,
)
from engine.history import Event, Snapshot
from tui.messages import ControlEntered, EditClosed
from tui.screens.help import HelpScreen
from tui.widgets.accuracy_plot import AccuracyPlot
from tui.widgets.alarm_banner import AlarmBanner
from tui.widgets.controls import ControlsPanel, format_control
from tui.widgets.editor import EDITABLE, ControlEditor
from tui.widgets.event_log import EventLog
from tui.widgets.key_hints import KeyHints
from tui.widgets.loss_plot import (
    DEFAULT_SMOOTHING,
    MARKER_COLORS,
    SMOOTHING_LEVELS,
    LossPlot,
)
from tui.widgets.status_bar import StatusBar

REFRESH_SECONDS = 0.1
"""The redraw timer's period (10 Hz)."""
PLOT_DUTY = 50.0
"""Plots are rebuilt at most every PLOT_DUTY × their build time, so building them takes at
most 2% of a core from training (at 100×30 both plots take ~30 ms to redraw, build and
conversion into lines: a redraw every ~1.5 s).
Every UI millisecond costs training more than a millisecond: the two kernel threads meet
at a barrier every step, so while the UI runs on one core the other waits. Measured on
2 cores, B=256, median of 7 interleaved pairs per run: plots never rebuilt 0.89–0.92 of
headless speed, duty 20 0.75–0.84, duty 50 0.82–0.95 (then 0.96 softmax and 0.92 SVM
over 21 pairs once the thread chooser held still). Text (header, panel, log) still
updates at 10 Hz, and a new marker (control, alarm, rescue) or a view key redraws the
plots at once."""
MAX_PLOT_INTERVAL = 2.0
"""…but at least every 2 s while data keeps changing."""
MIN_WIDTH, MIN_HEIGHT = 60, 16
"""Below this terminal size the dashboard shows only a message."""
CONTROL_NAMES = ("lr", "reg", "batch_size", "loss", "optimizer", "on_diverge")
"""Settings read from ``session.config``."""


def state_name(state: Any) -> str:
    """"RUNNING" from a str-enum member or a plain string."""
    return str(getattr(state, "value", state))


def format_rate(rate: float) -> str:
    """Steps per second, short: 950, 12.3k, 1.2M."""
    if not math.isfinite(rate) or rate <= 0:
        return "0"
    if rate < 1000:
        return f"{rate:.0f}"
    if rate < 1e6:
        return f"{rate / 1e3:.1f}k"
    return f"{rate / 1e6:.1f}M"


def format_elapsed(seconds: float) -> str:
    """h:mm:ss."""
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def short_spec(spec: str) -> str:
    """The dataset's name without a long path: ``cifar10:…/cifar-10-batches-py``."""
    if len(spec) <= 24:
        return spec
    kind, _, rest = spec.partition(":")
    tail = rest.rstrip("/").rsplit("/", 1)[-1]
    return f"{kind}:…/{tail}"[:24]


class Dashboard(Screen[None]):
    """Everything common to the live and replay dashboards."""

    AUTO_FOCUS = ""
    """Nothing is focused until the user edits a value: every key is a dashboard key."""
    HINTS = ""
    """The bottom line's key summary."""
    HELP_TITLE = "descent — keys"
    """The help screen's heading."""

    def __init__(self, session: Any, *, frozen_clock: bool = False) -> None:
        super().__init__()
        self.session = session
        """The Trainer or Replayer this screen draws."""
        self.frozen_clock = frozen_clock
        """Render clock-dependent text (elapsed, steps/s) as fixed values (snapshot tests)."""
        self.log_scale = False
        """The loss plot's y axis is log10 (key ``g``)."""
        self.smoothing = DEFAULT_SMOOTHING
        """The loss EMA factor (keys ``s`` / ``S``)."""
        self.bells = 0
        """Alarms announced so far (the terminal bell rang for each; tests read it)."""
        self.frame_ms: list[float] = []
        """Cost of recent redraws with new data, in ms: text updates, plot data prep and
        the plots' previous build time (builds happen at render time)."""
        self._last_key: tuple[object, ...] | None = None
        self._plots_key: tuple[object, ...] | None = None
        self._plots_at = -1e9
        self._text_ms = 0.0
        self._view_dirty = True
        self._alarms_seen = 0
        self._evals_seen = -1
        self._marks_seen = 0
        self._started = time.monotonic()

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield AlarmBanner(id="alarm")
        with Horizontal(id="main"):
            with Vertical(id="plots"):
                yield LossPlot(id="loss-plot")
                yield AccuracyPlot(id="acc-plot")
            with Vertical(id="side"):
                yield ControlsPanel(id="controls")
                yield EventLog(id="log")
        yield from self.compose_extra()
        yield KeyHints(self.HINTS, id="hints")
        yield Static("", id="too-small")

    def compose_extra(self) -> ComposeResult:
        """Widgets a subclass adds above the key hints."""
        return iter(())

    def on_mount(self) -> None:
        self.query_one("#alarm", AlarmBanner).hide()
        self.query_one("#side", Vertical).border_title = "controls"
        self._apply_size(self.app.size.width, self.app.size.height)
        self.refresh_view(force=True)
        self.set_interval(REFRESH_SECONDS, self.refresh_view)

    def on_resize(self, event: Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        self.set_class(small, "-too-small")
        self.set_class(width < 100, "-narrow")
        self.set_class(height < 30, "-short")
        self.set_class(height < 20, "-tiny")
        if small:
            self.query_one("#too-small", Static).update(
                f"terminal too small: need at least {MIN_WIDTH}×{MIN_HEIGHT}, "
                f"have {width}×{height}"
            )

    # -- the timer ---------------------------------------------------------------------
    def advance(self) -> None:
        """Called first on every tick (the replay dashboard advances playback here)."""

    def refresh_view(self, force: bool = False) -> None:
        """Read a snapshot; redraw what changed. Runs on the UI thread at 10 Hz.

        Text (header, panel, log, banner) follows every change at once. The plots are
        rebuilt when their data or view changed, but no more often than PLOT_DUTY times
        their own build cost, so a slow terminal or a huge window can never keep
        the UI thread (and the GIL) busy; a view key (g, s) or a new marker (control,
        alarm, rescue) redraws them at once.
        """
        self.advance()
        s = self.session
        snap = s.history.snapshot()
        state = state_name(s.state)
        key = (snap.version, state, self.log_scale, self.smoothing)
        with self.app.batch_update():
            self.update_status(snap, state)
            self.reconcile()
            if force or self._view_dirty or key != self._last_key:
                t0 = time.perf_counter()
                self._last_key = key
                self.query_one("#log", EventLog).sync(snap)
                self.on_new_data(snap, state)
                self.update_controls()
                self._text_ms = (time.perf_counter() - t0) * 1000
                marks = sum(1 for e in snap.events if e.kind in MARKER_COLORS)
                new_mark, self._marks_seen = marks != self._marks_seen, marks
                force = force or new_mark
            self._update_plots(snap, key, force or self._view_dirty)
            self._view_dirty = False

    def _update_plots(self, snap: Snapshot, key: tuple[object, ...], force: bool) -> None:
        if key == self._plots_key and not force:
            return
        loss = self.query_one("#loss-plot", LossPlot)
        acc = self.query_one("#acc-plot", AccuracyPlot)
        now = time.monotonic()
        build_s = (loss.last_build_ms + acc.last_build_ms) / 1000
        interval = min(MAX_PLOT_INTERVAL, max(REFRESH_SECONDS, PLOT_DUTY * build_s))
        if not force and now - self._plots_at < interval * 0.95:
            return
        t0 = time.perf_counter()
        self._plots_key, self._plots_at = key, now
        loss.update_data(snap, log_scale=self.log_scale, smoothing=self.smoothing)
        if snap.eval_step.size != self._evals_seen or force:
            self._evals_seen = int(snap.eval_step.size)
            acc.update_data(snap)
        self.frame_ms.append((time.perf_counter() - t0) * 1000 + self._text_ms + build_s * 1000)
        del self.frame_ms[:-200]

    def on_new_data(self, snap: Snapshot, state: str) -> None:
        """Hook for subclasses: react to new history (alarms, confirmations)."""

    def reconcile(self) -> None:
        """Hook for subclasses, every tick: drop pending values the session confirmed."""

    def mark_view_dirty(self) -> None:
        """Force a redraw at the next tick (a view setting changed)."""
        self._view_dirty = True

    # -- header and panel --------------------------------------------------------------
    def header_fields(self, snap: Snapshot) -> list[str]:
        """The header's fields after the state badge, most important first."""
        s = self.session
        c = s.config
        running = state_name(s.state) in ("RUNNING", "PLAYING")
        rate = f"{format_rate(s.steps_per_s) if running else 0} steps/s"
        if self.frozen_clock:
            rate = "– steps/s"
        return [
            short_spec(self.dataset_spec()),
            str(getattr(c, "loss", "")),
            str(getattr(c, "optimizer", "")),
            f"step {s.step}",
            f"epoch {float(s.epoch):.2f}",
            rate,
            self.elapsed_text(),
        ]

    def dataset_spec(self) -> str:
        ds = getattr(self.session, "dataset", None)
        return str(getattr(ds, "spec", "") or "")

    def elapsed_text(self) -> str:
        if self.frozen_clock:
            return "0:00:00"
        elapsed = getattr(self.session, "elapsed", None)
        if elapsed is None:
            elapsed = time.monotonic() - self._started
        return format_elapsed(float(elapsed))

    def update_status(self, snap: Snapshot, state: str) -> None:
        self.query_one("#status", StatusBar).set_fields(state, self.header_fields(snap))

    def control_values(self) -> dict[str, Any]:
        """The session's current settings by control name."""
        c = self.session.config
        if isinstance(c, dict):
            return {k: c[k] for k in CONTROL_NAMES if k in c}
        return {k: getattr(c, k) for k in CONTROL_NAMES if hasattr(c, k)}

    def view_rows(self) -> list[str]:
        """Rows under the controls: the view settings."""
        return [f"smooth {self.smoothing:g}", f"y {'log' if self.log_scale else 'linear'}"]

    def update_controls(self) -> None:
        values = self.control_values()
        self.query_one("#controls", ControlsPanel).show(
            values, {}, full=self.is_full_batch(values), extra=self.view_rows())

    def is_full_batch(self, values: dict[str, Any]) -> bool:
        ds = getattr(self.session, "dataset", None)
        num_train = getattr(ds, "num_train", None)
        if values.get("optimizer") == "gd":
            return True
        batch = values.get("batch_size")
        return num_train is not None and batch is not None and int(batch) >= num_train

    # -- view keys (both modes) ----------------------------------------------------------
    def action_smoothing(self, direction: int) -> None:
        """Step the EMA factor through SMOOTHING_LEVELS."""
        levels = SMOOTHING_LEVELS
        i = min(range(len(levels)), key=lambda k: abs(levels[k] - self.smoothing))
        self.smoothing = levels[max(0, min(len(levels) - 1, i + direction))]
        self.mark_view_dirty()
        self.update_controls()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.mark_view_dirty()
        self.update_controls()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.HELP_TITLE, self.help_rows()))

    def help_rows(self) -> list[tuple[str, str]]:
        """(keys, action) for every binding of this screen, then the app's."""
        rows: list[tuple[str, str]] = []
        for b in [*self.BINDINGS, *self.app.BINDINGS]:
            if isinstance(b, Binding) and b.description:
                rows.append((b.key_display or b.key, b.description))
        return rows

    def note(self, text: str) -> None:
        """A short message in the bottom line for a few seconds."""
        self.query_one("#hints", KeyHints).note(text)


class LiveDashboard(Dashboard):
    """The dashboard of a live Trainer: training keys, the value editor, the alarm banner."""

    HINTS = "space pause  n step  +-<> lr  ][0 λ  bB batch  e edit  R rescue  ? help  q quit"
    HELP_TITLE = "descent — live training keys"
    BINDINGS = [
        Binding("space", "toggle_pause", "pause / resume", key_display="space"),
        Binding("n", "one_step", "one step (while paused)"),
        Binding("plus", "lr(2.0)", "learning rate ×2", key_display="+"),
        Binding("minus", "lr(0.5)", "learning rate ÷2", key_display="-"),
        Binding("greater_than_sign", "lr(10.0)", "learning rate ×10", key_display=">"),
        Binding("less_than_sign", "lr(0.1)", "learning rate ÷10", key_display="<"),
        Binding("right_square_bracket", "reg(2.0)", "λ ×2", key_display="]"),
        Binding("left_square_bracket", "reg(0.5)", "λ ÷2", key_display="["),
        Binding("0", "reg_zero", "λ = 0"),
        Binding("b", "batch(1)", "next batch size: 32 … 1024, full set"),
        Binding("B", "batch(-1)", "previous batch size"),
        Binding("l", "toggle_loss", "loss svm ↔ softmax"),
        Binding("o", "next_optimizer", "next optimizer: sgd, gd, random, local"),
        Binding("r", "reset", "reset W to a new random initialisation"),
        Binding("R", "rescue", "rescue: last healthy W, lr ÷10 or lower"),
        Binding("d", "next_on_diverge", "on-diverge: pause, rescue, stop, ignore"),
        Binding("e", "edit", "edit exact lr / λ / batch (Enter applies, Esc leaves)"),
        Binding("s", "smoothing(1)", "more smoothing of the loss curve"),
        Binding("S", "smoothing(-1)", "less smoothing"),
        Binding("g", "toggle_log", "loss axis log ↔ linear"),
        Binding("question_mark", "help", "this help", key_display="?"),
    ]

    def __init__(self, session: Any, *, frozen_clock: bool = False) -> None:
        super().__init__(session, frozen_clock=frozen_clock)
        self.pending: dict[str, Any] = {}
        """Values sent to the trainer and not yet confirmed by a control event."""
        self._events_seen = 0
        self._recorder = next((o for o in getattr(session, "observers", ())
                               if hasattr(o, "status_line") and hasattr(o, "ok")), None)
        self._recorder_warned = False

    def compose_extra(self) -> ComposeResult:
        editor = ControlEditor(id="editor")
        editor.display = False
        yield editor

    @property
    def num_train(self) -> int | None:
        return getattr(getattr(self.session, "dataset", None), "num_train", None)

    # -- keeping the panel honest -----------------------------------------------------
    def reconcile(self) -> None:
        if not self.pending:
            return
        values = self.control_values()
        confirmed = [n for n, v in self.pending.items() if values.get(n) == v]
        for name in confirmed:
            del self.pending[name]
        if confirmed:
            self.update_controls()

    def on_new_data(self, snap: Snapshot, state: str) -> None:
        self._settle_pending(snap.events[min(self._events_seen, len(snap.events)):])
        self._events_seen = len(snap.events)
        self._update_alarm(snap, state)
        if self._recorder is not None and not self._recorder_warned and not self._recorder.ok:
            self._recorder_warned = True
            line = str(self._recorder.status_line())
            self.query_one("#log", EventLog).add_line(f"recording: {line}", "warning")
            self.note(f"recording: {line}")

    def _settle_pending(self, events: Sequence[Event]) -> None:
        """Drop the pending values the trainer has dealt with: applied (its control event),
        refused, or overtaken by a rescue (which sets lr). A value can be applied and
        changed again within one chunk (an automatic rescue right after a ×10), so the
        trainer's current value alone would leave it pending, shown with "…" and used as
        the base of the next +/- for good."""
        settled = False
        for e in events:
            if e.kind == "info" and e.name == "refused" and self.pending:
                self.pending.clear()
                settled = True
            elif (e.kind == "control" and e.name in self.pending
                  and self.pending[e.name] == e.value):
                del self.pending[e.name]
                settled = True
            elif e.kind == "rescue" and "lr" in self.pending:
                del self.pending["lr"]
                settled = True
        if settled:
            self.update_controls()

    def update_controls(self) -> None:
        values = self.control_values()
        merged = {**values, **self.pending}
        self.query_one("#controls", ControlsPanel).show(
            values, self.pending, full=self.is_full_batch(merged), extra=self.view_rows())

    def _update_alarm(self, snap: Snapshot, state: str) -> None:
        alarms = [e for e in snap.events if e.kind == "alarm"]
        banner = self.query_one("#alarm", AlarmBanner)
        if len(alarms) > self._alarms_seen:
            self._alarms_seen = len(alarms)
            self.bells += 1
            self.app.bell()
            if state != "DIVERGED":
                last = alarms[-1]
                self.note(f"alarm {last.name} at step {last.step}: {last.detail}")
        alarm = getattr(self.session, "alarm", None)
        if alarm is None and state != "DIVERGED":
            banner.hide()
            return
        rule = getattr(alarm, "rule", alarms[-1].name if alarms else "?")
        step = getattr(alarm, "step", alarms[-1].step if alarms else self.session.step)
        loss = getattr(alarm, "loss", alarms[-1].value if alarms else float("nan"))
        detail = getattr(alarm, "detail", alarms[-1].detail if alarms else "")
        mode = self.control_values().get("on_diverge", "pause")
        banner.show_alarm(
            f"DIVERGED: rule {rule} at step {step}, loss {_loss_text(loss)} — {detail}\n"
            f"R rescue (last healthy W, lower lr) · space resume · d on-diverge ({mode})"
        )

    # -- sending controls -------------------------------------------------------------
    def current(self, name: str) -> Any:
        """The value the user last asked for (pending) or the trainer's."""
        return self.pending.get(name, self.control_values().get(name))

    def set_control(self, name: str, value: Any) -> bool:
        """Validate and send one control; show it at once. Returns False if refused."""
        try:
            value = validate_control(name, value, self.num_train)
        except ConfigError as e:
            self.note(f"refused: {e}")
            return False
        self.pending[name] = value
        self.session.send(name, value)
        self.update_controls()
        return True

    def action_toggle_pause(self) -> None:
        self.session.send("toggle_pause")

    def action_one_step(self) -> None:
        if state_name(self.session.state) == "RUNNING":
            self.note("n runs one step while paused: press space first")
            return
        self.session.send("step")

    def action_lr(self, factor: float) -> None:
        self.set_control("lr", float(self.current("lr")) * factor)

    def action_reg(self, factor: float) -> None:
        self.set_control("reg", float(self.current("reg")) * factor)

    def action_reg_zero(self) -> None:
        self.set_control("reg", 0.0)

    def action_batch(self, direction: int) -> None:
        n = self.num_train or max(BATCH_LADDER)
        ladder = [b for b in BATCH_LADDER if b < n] + [n]
        cur = int(self.current("batch_size"))
        if direction > 0:
            nxt = next((b for b in ladder if b > cur), ladder[-1])
        else:
            nxt = next((b for b in reversed(ladder) if b < cur), ladder[0])
        self.set_control("batch_size", nxt)

    def action_toggle_loss(self) -> None:
        cur = self.current("loss")
        self.set_control("loss", LOSSES[(LOSSES.index(cur) + 1) % len(LOSSES)])

    def action_next_optimizer(self) -> None:
        cur = self.current("optimizer")
        self.set_control("optimizer", OPTIMIZERS[(OPTIMIZERS.index(cur) + 1) % len(OPTIMIZERS)])

    def action_next_on_diverge(self) -> None:
        cur = self.current("on_diverge")
        self.set_control("on_diverge", ON_DIVERGE[(ON_DIVERGE.index(cur) + 1) % len(ON_DIVERGE)])

    def action_reset(self) -> None:
        self.session.send("reset")
        self.note("W reset to a new random initialisation")

    def action_rescue(self) -> None:
        self.session.send("rescue")
        self.note("rescue: restoring the last healthy W, lr ÷10 or lower")

    # -- the editor -------------------------------------------------------------------
    def opens_input(self, key: str) -> bool:
        """True for the key that opens the editor (the app then holds the keys typed after
        it for the editor: see DescentApp.on_event)."""
        return key == "e" and not self.query_one("#editor", ControlEditor).display

    def action_edit(self) -> None:
        editor = self.query_one("#editor", ControlEditor)
        self.add_class("-editing")
        editor.open({name: _edit_text(name, self.current(name)) for name, _ in EDITABLE})
        hand_over = getattr(self.app, "hand_held_keys_to", None)
        if hand_over is not None:
            hand_over(self.query_one("#edit-lr"))

    @on(ControlEntered)
    def _control_entered(self, event: ControlEntered) -> None:
        editor = self.query_one("#editor", ControlEditor)
        try:
            value = validate_control(event.name, event.text, self.num_train)
        except ConfigError as e:
            editor.set_message(event.name, str(e), error=True)
            return
        self.set_control(event.name, value)
        editor.set_message(event.name, f"sent: {format_control(event.name, value)}")

    @on(EditClosed)
    def _edit_closed(self) -> None:
        self.query_one("#editor", ControlEditor).display = False
        self.remove_class("-editing")
        self.set_focus(None)
        release = getattr(self.app, "release_held_keys", None)
        if release is not None:  # a key typed right after Esc acts on the dashboard now
            release()


def _edit_text(name: str, value: Any) -> str:
    if name == "batch_size":
        return str(int(value))
    return f"{float(value):.3g}"


def _loss_text(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.4g}" if math.isfinite(f) else str(f)
