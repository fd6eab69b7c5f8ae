"""The bench's statistics (the timings themselves are `make bench`'s job, never a test's)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bench import Context, flop_bound_ms, overlap, roofline_ratio


def _ctx(repeats: int = 3) -> Context:
    return Context(X=np.zeros((2, 2), np.float32), y=np.zeros(2, np.int32),
                   W=np.zeros((2, 2), np.float32), rng=np.random.default_rng(0),
                   repeats=repeats)


def test_ratio_is_the_median_of_the_rounds_ratios():
    ctx = _ctx()
    # The machine slowed down in round 2 for both; round 3 favoured the reference.
    ctx.rates = [[10.0, 100.0, 30.0], [5.0, 100.0, 60.0]]
    assert ctx.pair_ratio(0, 1) == 1.0  # rounds: 2, 1, 0.5
    assert ctx.pair_ratio(1, 0) == 1.0
    # medians' ratio would say 0.5: the drift between rounds, not the two libraries
    assert np.median(ctx.rates[0]) / np.median(ctx.rates[1]) == 0.5


def test_timed_interleaves_and_reports_units_per_second_and_the_ratio():
    ctx = _ctx(repeats=3)
    order: list[str] = []

    def a() -> int:
        order.append("a")
        return 4

    def b() -> int:
        order.append("b")
        return 2

    rates = ctx.timed([a, b])
    assert order == ["a", "b"] * 3
    assert len(rates) == 2 and all(r > 0 for r in rates)
    assert len(ctx.rates[0]) == len(ctx.rates[1]) == 3
    assert ctx.ratio == ctx.pair_ratio(0, 1)


def test_flop_bound_counts_scores_and_gradient_at_the_peak():
    # A CIFAR-sized GD step is 6.0 GFLOP: 34.2 ms at 176 GFLOP/s, half that at twice the peak.
    assert abs(flop_bound_ms(49_000, 3073, 10, 176.0) - 34.22) < 0.01
    assert flop_bound_ms(49_000, 3073, 10, 352.0) == flop_bound_ms(49_000, 3073, 10, 176.0) / 2
    assert flop_bound_ms(256, 3073, 10, 176.0) == pytest.approx(1e3 * 4 * 256 * 3073 * 10 / 176e9)


def test_overlap_is_one_when_hidden_and_zero_when_serial():
    assert overlap(30.0, 20.0, 30.0) == 1.0  # the arithmetic hid under the stream
    assert overlap(30.0, 20.0, 50.0) == 0.0  # one after the other
    assert overlap(30.0, 20.0, 40.0) == 0.5
    assert overlap(30.0, 20.0, 60.0) < 0  # together slower than one after the other


def test_probe_reads_each_vector_of_its_rows_once_and_does_its_fmas():
    from engine.bench import _probe

    X = np.zeros((14, 40), np.float32)  # 2 whole vectors a row; the last 8 dims not read
    X[:, :32] = 1.0
    X[5, :32] = 3.0
    vec = 16 * 2  # lanes of a row's whole vectors
    out = np.zeros(2, np.float32)
    _probe(X, 40, 14, 0, 2, out)  # rows 0-6 and 7-13 (4 at a time, then 3 one by one), one add
    assert out.tolist() == [vec * 6 + vec * 3, vec * 7]
    _probe(X, 40, 14, 5, 2, out)  # 4 x 5 FMAs a vector
    assert out.tolist() == [20 * (vec * 6 + vec * 3), 20 * vec * 7]
    _probe(X, 40, 2, 0, 2, out)  # window 2: rows 0,1,0,1,... and 7,8,7,8,...
    assert out.tolist() == [vec * 7, vec * 7]
    _probe(X, 16, 14, 0, 2, out)  # only the first 16 dims: one vector a row
    assert out.tolist() == [16 * 6 + 16 * 3, 16 * 7]


def test_roofline_is_the_larger_of_the_stream_time_and_the_flop_bound_round_by_round():
    # Rounds: the stream takes 20, 25 and 40 ms, the flop bound is 30 ms, the step 60 ms.
    steps = [1 / 0.060] * 3
    streams = [1 / 0.020, 1 / 0.025, 1 / 0.040]
    # 60/30, 60/30 (the flop bound binds), 60/40 (the stream binds): median 2.0
    assert roofline_ratio(steps, streams, 30.0) == pytest.approx(2.0)
    assert roofline_ratio(steps, streams, 10.0) == pytest.approx(60 / 25)  # memory binds
    assert roofline_ratio(steps, streams, 60.0) == pytest.approx(1.0)  # at the flop bound
