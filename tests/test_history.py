"""History: columnar appends, snapshots that later appends never change, decimation."""

import numpy as np

from engine.history import Evaluation, Event, History, decimate


def test_appends_grow_past_capacity_and_snapshots_stay_valid():
    h = History()
    h.append_steps(np.arange(10.0), np.ones(10))
    snap = h.snapshot()
    for k in range(3):  # force several reallocations
        h.append_steps(np.full(5000, float(k)), np.zeros(5000))
    assert snap.steps == 10
    np.testing.assert_array_equal(snap.loss, np.arange(10.0) + 1)
    assert h.steps == 15010
    assert h.snapshot().loss[-1] == 2.0
    assert not snap.loss.flags.writeable


def test_version_changes_on_every_append_and_truncate_forgets_the_future():
    h = History()
    v0 = h.version
    h.append_steps([1.0, 2.0, 3.0, 4.0], [0.0] * 4)
    h.append_eval(Evaluation(0, 0.1, 0.2, 3.0, 2.9))
    h.append_eval(Evaluation(3, 0.3, 0.4, 2.0, 1.9))
    h.append_event(Event(2, "control", "lr", 1e-3, 1e-2))
    assert h.version == v0 + 4
    h.truncate(2)
    s = h.snapshot()
    assert s.steps == 2 and list(s.eval_step) == [0] and s.events == ()


def test_decimate_keeps_every_columns_min_and_max():
    y = np.zeros(100_000)
    y[31_337] = 2500.0  # one spike must survive
    y[77_000] = -5.0
    xs, ys = decimate(np.arange(y.size), y, columns=80)
    assert len(xs) <= 160
    assert ys.max() == 2500.0 and ys.min() == -5.0
    assert np.all(np.diff(xs) >= 0)


def test_decimate_passes_nan_and_inf_through():
    y = np.linspace(1, 2, 1000)
    y[500:] = np.nan
    y[10] = np.inf
    xs, ys = decimate(np.arange(1000), y, columns=10)
    assert np.isinf(ys).any()
    assert np.isnan(ys[-1])


def test_decimate_short_curve_is_unchanged():
    x, y = np.arange(5), np.arange(5.0)
    xs, ys = decimate(x, y, columns=10)
    np.testing.assert_array_equal(ys, y)
