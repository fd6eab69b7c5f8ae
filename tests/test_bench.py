"""The bench's statistics (the timings themselves are `make bench`'s job, never a test's)."""

from __future__ import annotations

import numpy as np

from engine.bench import Context


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
