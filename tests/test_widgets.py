"""Unit tests of the dashboard's pieces: smoothing, ticks, formatting, plots with NaN/inf."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from textual.app import App, ComposeResult

from engine.history import Evaluation, Event, History
from tui.widgets.accuracy_plot import AccuracyPlot
from tui.widgets.controls import ControlsPanel, format_control
from tui.widgets.event_log import EventLog
from tui.widgets.loss_plot import LossPlot, SmoothedCurve, ema_extend, format_loss
from tui.widgets.plot_base import (
    finite_points,
    format_step,
    linear_ticks,
    log_ticks,
    nice_ticks,
    step_ticks,
)


def naive_ema(x: np.ndarray, beta: float) -> np.ndarray:
    """The definition, one value at a time: debiased EMA over the finite values."""
    out, m, n = [], 0.0, 0
    for v in x:
        if math.isfinite(v):
            m = beta * m + (1 - beta) * v
            n += 1
        out.append(m / (1 - beta**n) if n else math.nan)
    return np.array(out)


@pytest.mark.parametrize("beta", [0.0, 0.6, 0.9, 0.99, 0.999])
def test_blocked_ema_equals_the_definition_and_skips_nan_and_inf(beta):
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=5000) * 3
    x[[0, 10, 11, 4000]] = [np.nan, np.inf, -np.inf, np.nan]
    got, _, _ = ema_extend(x, beta, 0.0, 0)
    want = naive_ema(x, beta)
    assert math.isnan(got[0]) and math.isnan(want[0])
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-9)


@pytest.mark.parametrize("chunks", [(3000,), (1, 1200, 1201, 2000, 3000), (1199, 1200, 3000)])
def test_smoothed_curve_starts_afresh_at_a_rescue(chunks):
    # a blow-up to 1e20, rescued at step 1200: from there the curve is the average of the
    # post-rescue losses alone, however the history arrived
    x = np.random.default_rng(2).normal(2.0, 0.2, 3000)
    x[1000:1200] = np.logspace(1, 20, 200)
    curve = SmoothedCurve(0.99)
    for n in chunks:
        got = curve.update(x[:n], [1200]).copy()
    np.testing.assert_allclose(got[:1200], naive_ema(x[:1200], 0.99), rtol=1e-9)
    np.testing.assert_allclose(got[1200:], naive_ema(x[1200:], 0.99), rtol=1e-9)
    assert got[1210] < 3.0  # without the restart: about 1e19
    assert naive_ema(x, 0.99)[1210] > 1e18


def test_smoothed_curve_is_incremental_and_restarts_when_history_shrinks():
    x = np.random.default_rng(1).normal(2.0, 0.5, 3000)
    curve = SmoothedCurve(0.99)
    for n in (1, 7, 1000, 2500, 3000):  # growing in uneven chunks
        got = curve.update(x[:n]).copy()
    np.testing.assert_allclose(got, naive_ema(x, 0.99), rtol=1e-9)
    y = x[:500] + 1.0  # a seek back that changes the series
    np.testing.assert_allclose(curve.update(y), naive_ema(y, 0.99), rtol=1e-9)
    curve.set_beta(0.9)
    np.testing.assert_allclose(curve.update(y), naive_ema(y, 0.9), rtol=1e-9)


def test_huge_losses_do_not_overflow_the_smoothing():
    x = np.array([1.0, 1e38, 1e300, 2.0])
    got, _, _ = ema_extend(x, 0.999, 0.0, 0)
    assert np.all(np.isfinite(got))


def test_finite_points_drops_nan_inf_and_non_positive_on_log_axis():
    x = np.arange(6.0)
    y = np.array([1.0, np.nan, np.inf, -1.0, 0.0, 100.0])
    xs, ys = finite_points(x, y, log=False)
    assert xs.tolist() == [0, 3, 4, 5]
    xs, ys = finite_points(x, y, log=True)
    assert xs.tolist() == [0, 5] and ys.tolist() == [0.0, 2.0]


def test_ticks_are_round_and_inside_the_range():
    assert nice_ticks(0, 1000, 6) == [0, 200, 400, 600, 800, 1000]
    t = nice_ticks(0, 12345, 5)
    assert t[0] == 0 and t[-1] <= 12345 and len(t) <= 6
    ticks, labels = log_ticks(-2.0, 1.0, 10)
    assert labels[0] == "0.01" and labels[-1] == "10" and all(-2 <= v <= 1 for v in ticks)
    ticks, labels = log_ticks(0.1, 0.4, 5)  # less than a decade: 1,2,5 multiples
    assert len(ticks) >= 2


@pytest.mark.parametrize("right", [1, 2, 3, 7, 59, 12345])
def test_step_axis_ticks_are_whole_distinct_steps(right):
    ticks = step_ticks(float(right), 6)
    labels = [format_step(t) for t in ticks]
    assert ticks[0] == 0 and ticks[-1] <= right and len(ticks) >= 2
    assert all(t == int(t) for t in ticks)
    assert len(set(labels)) == len(labels)  # right = 1 used to read "0 0 1"


def test_control_text_is_the_documented_format():
    assert format_control("lr", 1e-3) == "lr 1.00e-03"
    assert format_control("reg", 2.5e4) == "λ 2.50e+04"
    assert format_control("batch_size", 256) == "batch 256"
    assert format_control("batch_size", 49000, full=True) == "batch full"
    assert format_control("loss", "softmax") == "loss softmax"
    assert format_control("optimizer", "sgd") == "opt sgd"


class PlotApp(App[None]):
    """Just the plots and the log, to feed them hand-made histories."""

    def compose(self) -> ComposeResult:
        yield LossPlot(id="loss")
        yield AccuracyPlot(id="acc")
        yield ControlsPanel(id="controls")
        yield EventLog(id="log")


def nasty_history() -> History:
    h = History()
    loss = np.linspace(2.3, 0.5, 2000)
    loss[[100, 700]] = [np.nan, np.inf]
    loss[1500:] = -1.0  # impossible but must not crash a log axis
    h.append_steps(loss, np.zeros_like(loss))
    h.append_eval(Evaluation(0, 0.1, 0.1, np.nan, 2.3))
    h.append_eval(Evaluation(1000, 0.5, 0.4, np.inf, 1.0))
    h.append_event(Event(500, "control", "lr", 0.2, 0.1, "lr 1.00e-01 → 2.00e-01"))
    h.append_event(Event(700, "alarm", "nonfinite", np.inf, None, "loss inf at step 700"))
    return h


@pytest.mark.parametrize("log_scale", [False, True])
async def test_plots_survive_nan_inf_and_negative_values(log_scale):
    app = PlotApp()
    async with app.run_test(size=(100, 40)) as pilot:
        snap = nasty_history().snapshot()
        loss, acc = app.query_one(LossPlot), app.query_one(AccuracyPlot)
        loss.update_data(snap, log_scale=log_scale, smoothing=0.99)
        acc.update_data(snap)
        await pilot.pause()
        assert loss.builds >= 1 and acc.builds >= 1
        text = loss.render().plain
        assert "loss" in text and "┤" in text  # axes were drawn
        log = app.query_one(EventLog)
        log.sync(snap)
        assert any("ALARM nonfinite" in line for line in log.plain_lines)


async def test_a_clean_frame_does_not_rebuild_the_plot():
    app = PlotApp()
    async with app.run_test(size=(100, 40)) as pilot:
        plot = app.query_one(LossPlot)
        plot.update_data(nasty_history().snapshot(), log_scale=False, smoothing=0.9)
        await pilot.pause()
        builds = plot.builds
        for _ in range(3):
            plot.refresh()
            await pilot.pause()
        assert plot.builds == builds
        await pilot.resize_terminal(90, 30)
        await pilot.pause()
        assert plot.builds == builds + 1


async def test_a_redraw_is_timed_whole_the_build_and_its_conversion_into_lines(monkeypatch):
    # The duty cycle spends what a redraw costs: plotext's build (1 ms on this fake clock)
    # and Textual's conversion of its text into lines (5 ms), not the build alone.
    import textual.widget

    import tui.widgets.plot_base as plot_base

    now = [0.0]
    monkeypatch.setattr(plot_base, "clock", lambda: now[0])
    draw = LossPlot.draw

    def slow_draw(self, width, height):
        now[0] += 0.001
        draw(self, width, height)

    lines = textual.widget.Widget.render_lines

    def slow_lines(self, crop):
        strips = lines(self, crop)
        now[0] += 0.005 if isinstance(self, LossPlot) else 0.0
        return strips

    monkeypatch.setattr(LossPlot, "draw", slow_draw)
    monkeypatch.setattr(textual.widget.Widget, "render_lines", slow_lines)
    app = PlotApp()
    async with app.run_test(size=(100, 40)) as pilot:
        plot = app.query_one(LossPlot)
        plot.update_data(nasty_history().snapshot(), log_scale=False, smoothing=0.9)
        await pilot.pause()
        assert plot.builds >= 1
        assert plot.last_build_ms == pytest.approx(6.0)


def test_the_event_log_rebuilds_when_history_shrinks():
    h = nasty_history()
    log = EventLog()
    log.sync(h.snapshot())
    n = len(log.plain_lines)
    h.truncate(600)  # replay seeking back: the alarm at 700 is gone
    log.sync(h.snapshot())
    assert len(log.plain_lines) < n
    assert not any("ALARM" in line for line in log.plain_lines)


def test_minmax_summary_keeps_spikes_and_costs_no_more_than_its_buckets():
    from tui.widgets.loss_plot import MinMaxSummary

    rng = np.random.default_rng(2)
    y = rng.normal(1.0, 0.1, 300_001)
    y[123_457] = 1e6  # a one-step spike
    y[200_000] = -5.0
    y[50] = np.nan
    summary = MinMaxSummary()
    for n in (10, 5000, 100_000, 300_001):  # grows in chunks
        summary.update(y[:n])
    assert summary.lo.shape[0] <= MinMaxSummary.MAX_BUCKETS
    xs, ys = summary.decimated(y, 80)
    assert len(xs) <= 160 and np.all(np.diff(xs) >= 0)
    assert np.nanmax(ys) == 1e6 and np.nanmin(ys) == -5.0
    assert abs(xs[np.nanargmax(ys)] - 123_457) <= len(y) / 80  # within its column
    summary.update(y[:1000])  # shorter: starts over
    assert summary.n <= 1000


class _TypingApp(App[None]):
    """Two inputs, the first focused; ``kind`` is the Input class under test."""

    def __init__(self, kind: type) -> None:
        super().__init__()
        self.kind = kind
        self.submitted: list[str] = []

    def compose(self) -> ComposeResult:
        yield self.kind(id="field", select_on_focus=False)
        yield self.kind(id="other", select_on_focus=False)

    def on_mount(self) -> None:
        self.query_one("#field").focus()

    def on_input_submitted(self, event: Any) -> None:
        self.submitted.append(event.value)


async def _type_at_once(kind: type, keys: list[str]) -> tuple[str, list[str], str]:
    """Post every key to the app before any is handled (as keys read from the terminal in
    one go arrive), then let them all be handled; returns the first input's value, what
    Enter sent and the second input's value."""
    from textual import events

    app = _TypingApp(kind)
    async with app.run_test() as pilot:
        field, other = app.query_one("#field"), app.query_one("#other")
        for key in keys:
            char = key if len(key) == 1 else {"minus": "-", "tab": "\t"}.get(key)
            app.post_message(events.Key(key, char))
        for _ in range(20):
            await pilot.pause()
        return field.value, app.submitted, other.value


@pytest.mark.parametrize(
    ("keys", "want"),
    [
        (["a", "b", "backspace", "c"], "ac"),
        (["a", "b", "backspace", "backspace", "backspace", "1", "e", "minus", "3"], "1e-3"),
        (["1", "2", "left", "x", "end", "y"], "1x2y"),
        (["7", "8", "home", "delete", "9"], "98"),
    ],
)
async def test_keys_typed_at_once_act_in_the_order_typed(keys, want):
    from tui.widgets.ordered_input import OrderedInput

    value, _, _ = await _type_at_once(OrderedInput, keys)
    assert value == want


async def test_enter_typed_at_once_submits_what_was_typed_before_it():
    from tui.widgets.ordered_input import OrderedInput

    value, submitted, _ = await _type_at_once(OrderedInput,
                                              ["5", "backspace", "6", "enter", "7"])
    assert submitted == ["6"] and value == "67"


async def test_keys_typed_at_once_after_tab_go_to_the_next_input():
    from tui.widgets.ordered_input import OrderedInput

    keys = ["1", "tab", "2", "backspace", "3", "shift+tab", "4"]
    first, _, second = await _type_at_once(OrderedInput, keys)
    assert (first, second) == ("14", "3")



def test_format_loss_keeps_four_significant_digits_and_trailing_zeros():
    # A smoothed loss of 2.1 must not read "2.1" beside "loss 2.048": the title keeps width.
    assert [format_loss(v) for v in (2.1, 2.0999999, 2.048, 0.0, 123.4, 1234.0)] == [
        "2.100", "2.100", "2.048", "0.000", "123.4", "1234"]
    # Far from 1 (a diverged run passes 2500 and climbs): powers of ten, 4 digits still.
    assert format_loss(25_123.0) == "2.512e+04"
    assert format_loss(0.000123) == "1.230e-04"
    assert [format_loss(v) for v in (math.nan, math.inf)] == ["nan", "inf"]


def test_linear_ticks_are_round_with_the_digits_their_step_needs():
    ticks, labels = linear_ticks(1.787, 2.312, 8)
    assert labels == ["1.8", "1.9", "2.0", "2.1", "2.2", "2.3"]
    assert ticks == pytest.approx([1.8, 1.9, 2.0, 2.1, 2.2, 2.3])
    assert linear_ticks(1.787, 2.312, 4)[1] == ["1.8", "2.0", "2.2"]
    assert linear_ticks(-0.3, 0.2, 5)[1] == ["-0.2", "-0.1", "0", "0.1", "0.2"]
    # a diverging loss: short labels, as many mantissa digits as the step needs
    assert linear_ticks(2.4e4, 3.6e4, 5)[1] == ["2.5e+04", "3.0e+04", "3.5e+04"]
    assert linear_ticks(1.8, 2.6e53, 3)[1] == ["1e+53", "2e+53"]
    assert linear_ticks(1.8, 2.6e53, 5)[1] == ["5.0e+52", "1.0e+53", "1.5e+53", "2.0e+53",
                                               "2.5e+53"]
    assert linear_ticks(2.3, 1.245e36, 2)[1] == ["5.0e+35", "1.0e+36"]
    # as many ticks as fit: 0.2 apart, not 0.5 (2 ticks) for a 0.3-1.38 loss on 5 rows
    assert linear_ticks(0.30, 1.38, 5)[1] == ["0.4", "0.6", "0.8", "1.0", "1.2"]
    # no two round ticks fit, or no span: the ends
    assert linear_ticks(2.3, 2.9, 2) == ([2.3, 2.9], ["2.3", "2.9"])
    assert linear_ticks(2.0, 2.0, 5) == ([2.0], ["2"])
    # flat to float resolution (the round steps collapse to 0): one tick, no crash
    assert linear_ticks(2.0, 2.0 + 1e-15, 5) == ([2.0], ["2"])
    assert linear_ticks(2.302585, 2.302585 + 1e-7, 5) == ([2.302585], ["2.3"])
    assert linear_ticks(0.0, math.inf, 5) == ([], [])


def test_linear_ticks_never_fail_and_their_labels_tell_the_ticks_apart():
    # spans from float resolution to 1e300 (a flat span once crashed on log10(0))
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        lo = float(rng.choice([0.0, 1.0, -1.0]) * 10 ** rng.uniform(-12, 300))
        hi = lo + abs(lo) * 10 ** rng.uniform(-20, 3) + float(rng.choice([0.0, 1e-300, 1.0]))
        if not math.isfinite(hi):
            continue
        ticks, labels = linear_ticks(lo, hi, int(rng.integers(1, 20)))
        assert len(ticks) == len(labels) >= 1 and len(set(labels)) == len(labels), labels
        assert all(lo <= t <= hi for t in ticks) and max(map(len, labels)) <= 15


def diverged_history() -> History:
    h = History()
    loss = np.concatenate([[2.31], 1.245e6 * 10.0 ** np.arange(0, 35, 5)])
    h.append_steps(loss, np.zeros_like(loss))
    h.append_eval(Evaluation(0, 0.1, 0.1, 2.3, 2.3))
    return h


@pytest.mark.parametrize("size", [(46, 11), (46, 7), (52, 11), (100, 18)])
async def test_a_diverged_loss_keeps_short_labels_and_a_title(size):
    # Linear axis, loss up to 1e36: plotext's own labels printed every digit
    # (263317337907190955368976657201205421074438121024651264.0) and left no room for the
    # curve; and a title that does not fit the canvas beside the tick labels (48 columns
    # in a 52-column plot with 7-column labels) vanished.
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield LossPlot(id="loss")

    app = One()
    async with app.run_test(size=size) as pilot:
        plot = app.query_one(LossPlot)
        plot.update_data(diverged_history().snapshot(), log_scale=False, smoothing=0.99)
        await pilot.pause()
        lines = plot.render().plain.splitlines()
        assert lines[0].strip().startswith("loss 1.245e+36")
        assert "val 2.300" in lines[0]
        assert ("smoothed" in lines[0]) == (size[0] >= 60)
        labels = [line.split("┤")[0].strip() for line in lines if "┤" in line]
        assert labels and all(len(label) <= 7 for label in labels), labels
        assert sum("⣀" in line or "⠁" in line for line in lines) >= 1  # the curve is drawn


def rescued_history(rescued: bool) -> History:
    """2000 steps from 2.3 down to 1.0 with a blow-up to 1e50 at steps 1000-1009, which
    raised an alarm at 1000 and (when `rescued`) a rescue at 1010."""
    h = History()
    loss = np.linspace(2.3, 1.0, 2000)
    loss[1000:1010] = 10.0 ** np.arange(5, 55, 5)
    h.append_steps(loss, np.zeros_like(loss))
    h.append_eval(Evaluation(0, 0.1, 0.1, 2.4, 2.3))
    h.append_eval(Evaluation(1005, 0.1, 0.1, 3e40, 1e40))  # evaluated mid-blow-up
    h.append_event(Event(999, "control", "lr", 1.0, 1e-3, "lr ×1000"))
    h.append_event(Event(1000, "alarm", "above_start", 1e5, None, "loss 1e5"))
    if rescued:
        h.append_event(Event(1010, "rescue", "rescue", 1e-3, 1.0, "restored"))
    return h


@pytest.mark.parametrize("rescued", [False, True])
@pytest.mark.parametrize("log_scale", [False, True])
async def test_a_rescued_blow_up_does_not_set_the_linear_scale(rescued, log_scale):
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield LossPlot(id="loss")

    app = One()
    async with app.run_test(size=(80, 20)) as pilot:
        plot = app.query_one(LossPlot)
        plot.update_data(rescued_history(rescued).snapshot(), log_scale=log_scale,
                         smoothing=0.99)
        await pilot.pause()
        lines = plot.render().plain.splitlines()
        labels = [line.split("┤")[0].strip() for line in lines if "┤" in line]
        top = max(float(label) for label in labels)
        if rescued and not log_scale:  # the run's own range: 1.0 to 2.4 (val at step 0)
            assert 2.0 <= top <= 2.4, labels
        else:  # the blow-up is the scale: before the rescue, or on the log axis
            assert top >= 1e39, labels
        assert sum("⣀" in line or "⠉" in line or "⠒" in line for line in lines) >= 1


def test_the_rescued_scale_follows_a_replay_seeking_back():
    """The largest loss kept is updated incrementally; a shorter history (a replay seeking
    back) is looked at afresh, so a later, larger loss no longer sets the scale."""
    h = rescued_history(True)
    later = np.full(1000, 50.0)  # a much higher loss after step 2000 (a change of loss)
    h.append_steps(later, np.zeros_like(later))
    plot = LossPlot()
    plot.update_data(h.snapshot(), log_scale=False, smoothing=0.99)
    spans = ((1000, 1010),)
    assert plot._kept_max(h.snapshot(), spans) == 50.0
    h.truncate(1500)
    plot.update_data(h.snapshot(), log_scale=False, smoothing=0.99)
    assert plot._kept_max(h.snapshot(), spans) == pytest.approx(2.3)


@pytest.mark.parametrize("with_events", [False, True])
async def test_a_fork_before_its_parent_blew_up_keeps_a_readable_scale(with_events):
    """A fork at step 900 of a parent that blew up at 1000 and was rescued at 1010: the
    parent's overlay restarts its average at the rescue, and the steps the rescue threw
    away do not set the linear scale (without the parent's events they do)."""
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield LossPlot(id="loss")

    parent = rescued_history(True)
    fork = History()
    mine = np.linspace(2.3, 1.2, 2000)
    fork.append_steps(mine, np.zeros_like(mine))
    app = One()
    async with app.run_test(size=(80, 20)) as pilot:
        plot = app.query_one(LossPlot)
        snap = parent.snapshot()
        plot.set_parent(snap.loss, 900, snap.events if with_events else ())
        plot.update_data(fork.snapshot(), log_scale=False, smoothing=0.99)
        await pilot.pause()
        lines = plot.render().plain.splitlines()
        labels = [line.split("┤")[0].strip() for line in lines if "┤" in line]
        top = max(float(label) for label in labels)
        if with_events:
            assert 2.0 <= top <= 2.4, labels
            after = plot.parent_curve[1][1010 - 900:]
            assert np.all(after < 2.0)  # the average restarted at the parent's rescue
        else:  # the parent's average carries the blow-up and sets the scale
            assert top >= 1e20, labels


def test_rescued_spans_follow_alarms_answered_by_a_rescue():
    from tui.widgets.loss_plot import rescued_spans

    ev = [Event(10, "alarm", "nonfinite"), Event(12, "alarm", "above_start"),
          Event(15, "rescue", "rescue"), Event(40, "alarm", "nonfinite"),
          Event(41, "resume", "resume"), Event(60, "rescue", "rescue"),
          Event(70, "alarm", "nonfinite"), Event(75, "rescue", "rescue"),
          Event(90, "alarm", "nonfinite")]
    assert rescued_spans(ev) == ((10, 15), (70, 75))


def test_a_narrow_title_keeps_the_parent_of_a_fork_and_drops_the_smoothed_loss():
    h = History()
    h.append_steps(np.full(2500, 1.924), np.zeros(2500))
    h.append_eval(Evaluation(2500, 0.37, 0.36, 1.946, 1.93))
    plot = LossPlot()
    plot._smoothed = np.array([1.926])
    plot.parent_curve = (np.arange(1000.0, 2501.0), np.full(1501, 1.95))
    snap = h.snapshot()
    full = "loss 1.924 · smoothed 1.926 · val 1.946 · parent@1000"
    assert plot._title(snap, "", 0.99) == full
    assert plot._title(snap, "", 0.99, 38) == "loss 1.924 · val 1.946 · parent@1000"
    assert plot._title(snap, " · log", 0.99, 30) == "loss 1.924 · val 1.946 · log"
    assert plot._title(snap, " · log", 0.99, 25) == "loss 1.924 · val 1.946"
    assert plot._title(snap, "", 0.99, 10) == "loss 1.924"
