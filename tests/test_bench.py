"""The bench's statistics (the timings themselves are `make bench`'s job, never a test's)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bench import Context, flop_bound_ms


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
