"""The divergence alarm: each rule on crafted losses, no false alarms on healthy runs
(simulated curves and real SGD on small random data), chunking invariance, rearm/rescue."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from engine.divergence import Alarm, DivergenceConfig, DivergenceMonitor
from engine.reference import LOSSES

CFG = DivergenceConfig()


# ----- helpers ------------------------------------------------------------------------------

def feed(losses, chunk=None, monitor=None, start=0):
    """Run losses through a monitor in chunks (an int, a list of sizes, or one chunk)."""
    m = monitor or DivergenceMonitor()
    x = np.asarray(losses, dtype=np.float64)
    sizes = [len(x)] if chunk is None else chunk
    if isinstance(sizes, int):
        sizes = [sizes] * (len(x) // sizes + 1)
    out, s = [], 0
    for n in sizes:
        if s >= len(x):
            break
        out += m.update(start + s, x[s:s + n])
        s += n
    assert s >= len(x)
    return out, m


def rules(alarms):
    return [(a.step, a.rule) for a in alarms]


def oracle(losses, cfg=CFG):
    """The rules of engine/divergence.py's docstring, written out plainly: (step, rule)."""
    out, diverged = [], False
    baseline, m, n, best, last_spike = math.nan, 0.0, 0, math.nan, -(10**9)
    window: list[float] = []
    floor = cfg.loss_floor
    for t, x in enumerate(losses):
        if not math.isfinite(x):
            if not diverged:
                out.append((t, "nonfinite"))
                diverged = True
            continue
        if math.isnan(baseline):
            baseline = x
        n += 1
        m = cfg.ema_beta * m + (1 - cfg.ema_beta) * x
        ema = m / (1 - cfg.ema_beta**n)
        if not diverged:
            if x > cfg.start_factor * max(baseline, floor):
                out.append((t, "above_start"))
                diverged = True
            elif n > cfg.warmup and ema > cfg.ema_factor * max(best, floor):
                out.append((t, "ema_blowup"))
                diverged = True
            elif len(window) == cfg.spike_window and t - last_spike >= cfg.spike_window:
                mu, sd = np.mean(window), np.std(window)
                sd = max(sd, cfg.spike_rel_floor * max(abs(mu), floor))
                if x > mu + cfg.spike_sigma * sd:
                    out.append((t, "spike"))
                    last_spike = t
        if n >= cfg.warmup and not ema >= best:
            best = ema
        window = (window + [x])[-cfg.spike_window:]
    return out


def curve(steps, start, final, noise, seed, tau=None, heavy=False):
    """A healthy training curve: exponential decay from start to final plus batch noise.

    noise is relative to the current level; heavy=True draws gamma (right-skewed) noise,
    like the per-batch hinge loss, instead of Gaussian.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    level = final + (start - final) * np.exp(-t / (tau or steps / 8))
    if heavy:
        k = 4.0  # gamma shape: mean 1, std 1/sqrt(k) = 0.5 before scaling
        eps = (rng.gamma(k, 1 / k, steps) - 1) * 2 * noise
    else:
        eps = rng.standard_normal(steps) * noise
    return level * (1 + eps)


def blobs_data(seed, n=400, d=97, c=10):
    """Pixel-scale, mean-subtracted rows with a bias column: (n, d) X, (n,) y."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 20, (c, d - 1))
    y = rng.integers(0, c, n)
    X = means[y] + rng.normal(0, 60, (n, d - 1))
    X -= X.mean(axis=0)
    return np.hstack([X, np.ones((n, 1))]), y


def sgd(kind, lr, reg, batch, steps, seed=0, lr_after=None, at=None):
    """Minibatch SGD with the numpy reference: per-step losses and update/weight ratios."""
    X, y = blobs_data(seed)
    rng = np.random.default_rng(seed + 1)
    W = 1e-3 * rng.standard_normal((X.shape[1], 10))
    losses, ratios = np.empty(steps), np.empty(steps)
    with np.errstate(all="ignore"):
        for s in range(steps):
            a = lr if at is None or s < at else lr_after
            idx = rng.integers(0, len(X), batch)
            losses[s], dW = LOSSES[kind](W, X[idx], y[idx], reg)
            ratios[s] = np.linalg.norm(a * dW) / np.linalg.norm(W)
            W -= a * dW
    return losses, ratios


def watch(losses, ratios, chunk=100):
    """Feed a run the way the trainer does: one update and one ratio check per chunk."""
    m, out = DivergenceMonitor(), []
    for s in range(0, len(losses), chunk):
        out += m.update(s, losses[s:s + chunk])
        e = min(s + chunk, len(losses)) - 1
        w = m.check_update_ratio(e, ratios[e])
        out += [w] if w else []
    return out


# ----- configuration -----------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("start_factor", 1.0), ("ema_factor", 0.5), ("ema_beta", 1.0), ("ema_beta", -0.1),
    ("spike_sigma", 0.0), ("spike_window", 1), ("ratio_warn", -1.0), ("ratio_patience", 0),
    ("warmup", 0), ("loss_floor", float("nan")), ("healthy_factor", float("inf")),
    ("spike_window", 12.5), ("warmup", True), ("start_factor", "3"),
])
def test_config_rejects_bad_values_with_one_line(field, value):
    with pytest.raises(ValueError) as e:
        DivergenceConfig(**{field: value})
    msg = str(e.value)
    assert field in msg and "\n" not in msg


def test_monitor_rejects_bad_input_with_one_line():
    with pytest.raises(ValueError, match="1-D"):
        DivergenceMonitor().update(0, np.ones((3, 2)))
    with pytest.raises(TypeError, match="DivergenceConfig"):
        DivergenceMonitor({"start_factor": 3})  # type: ignore[arg-type]


# ----- each rule on a crafted sequence --------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_fires_at_once(bad):
    x = np.full(60, 2.3)
    x[37] = bad
    x[38:] = math.nan  # later non-finite losses are the same episode
    alarms, m = feed(x, start=1000)
    assert rules(alarms) == [(1037, "nonfinite")]
    a = alarms[0]
    assert a.level == "alarm" and (a.loss == bad or math.isnan(a.loss) and math.isnan(bad))
    assert a.values["baseline"] == 2.3 and a.values["ema"] == pytest.approx(2.3)
    assert str(bad) in a.detail and "1037" in a.detail
    assert m.diverged and not m.healthy
    assert m.smoothed == pytest.approx(2.3)  # non-finite losses never enter the EMA


def test_above_start_fires_past_three_times_the_first_loss():
    x = np.full(40, 2.3)
    x[10] = 6.85  # < 3 × 2.3 = 6.9: nothing
    x[20] = 6.95
    alarms, m = feed(x)
    assert rules(alarms) == [(20, "above_start")]
    a = alarms[0]
    assert a.level == "alarm" and a.loss == 6.95
    assert a.values["threshold"] == pytest.approx(6.9) and a.values["baseline"] == 2.3
    assert a.values["factor"] == 3.0
    assert a.detail == "loss 6.95 > 3× start loss 2.30 at step 20"
    assert m.diverged


def test_ema_blowup_catches_a_reg_dominated_run_that_never_passes_3x_start():
    # CS231n SVM, init 1e-3, λ = 2.5e4: starts near 800 (regularization), trains to ~5;
    # then the lr is raised and the loss climbs to 2500 (< 3 × 800, so above_start can't)
    healthy = curve(2000, 800, 5, 0.1, seed=1, tau=150)
    climb = 5 * np.exp(np.linspace(0, math.log(500), 300))  # 5 → 2500
    x = np.concatenate([healthy, climb])
    alarms, m = feed(x)
    assert alarms and alarms[0].rule == "ema_blowup"
    a = alarms[0]
    assert rules(alarms) == oracle(x)[:1]
    assert a.step > 2000 and a.loss < 2400  # long before 3 × start
    # the values are the debiased EMA and its best, recomputed here plainly
    beta, mm, emas = CFG.ema_beta, 0.0, []
    for t, v in enumerate(x[: a.step + 1]):
        mm = beta * mm + (1 - beta) * v
        emas.append(mm / (1 - beta ** (t + 1)))
    best = min(emas[CFG.warmup - 1: a.step])
    assert a.values["ema"] == pytest.approx(emas[-1], rel=1e-12)
    assert a.values["best"] == pytest.approx(best, rel=1e-12)
    assert a.values["ema"] > 4 * best and emas[-2] <= 4 * best
    assert "smoothed loss" in a.detail and f"step {a.step}" in a.detail


def test_ema_rule_waits_for_warmup():
    # a low first stretch (one lucky batch after a rearm, say), then a normal level 8× higher
    x = np.concatenate([np.full(10, 1.0), np.full(500, 8.0)])
    lenient = DivergenceConfig(start_factor=100.0)
    assert feed(x, monitor=DivergenceMonitor(lenient))[0] == []
    no_warmup = DivergenceConfig(start_factor=100.0, warmup=1)
    assert rules(feed(x, monitor=DivergenceMonitor(no_warmup))[0])[0][1] == "ema_blowup"


def test_spike_warns_against_the_previous_window_only():
    rng = np.random.default_rng(3)
    x = 2.0 + 0.2 * rng.standard_normal(700)  # σ = 0.2, above the floor 5% × 2
    x[300] = 2.0 + 12 * 0.2  # a spike
    x[310] = 2.0 + 15 * 0.2  # inside the cooldown: no second warning
    x[500] = 2.0 + 12 * 0.2  # 200 steps later: a new warning
    alarms, m = feed(x)
    assert rules(alarms) == [(300, "spike"), (500, "spike")] == oracle(x)
    a = alarms[0]
    assert a.level == "warning" and not m.diverged
    window = x[300 - 128: 300]
    assert a.values["mean"] == pytest.approx(np.mean(window), rel=1e-12)
    assert a.values["std"] == pytest.approx(np.std(window), rel=1e-9)
    assert a.values["threshold"] == pytest.approx(np.mean(window) + 6 * np.std(window))
    assert "spike" in a.detail and "128 steps" in a.detail


def test_spike_makes_the_monitor_unhealthy_for_one_window():
    x = np.full(400, 2.0)
    x[200] = 4.0
    m = DivergenceMonitor()
    m.update(0, x[:200])
    assert m.healthy
    assert rules(m.update(200, x[200:201])) == [(200, "spike")]
    assert not m.healthy and not m.diverged
    m.update(201, x[201:327])
    assert not m.healthy  # step 326: the spike is 126 steps back
    m.update(327, x[327:329])
    assert m.healthy  # step 328: 128 steps back


def test_spike_needs_a_full_window():
    x = np.full(300, 2.0)
    x[127] = 5.0  # would be a spike, but only 127 losses came before
    assert feed(x)[0] == []
    y = np.full(300, 2.0)
    y[128] = 5.0
    assert rules(feed(y)[0]) == [(128, "spike")]


def test_spike_std_floor_on_a_flat_curve():
    # full-batch GD on a converged run: std of the window ≈ 0
    x = np.full(300, 1.0)
    x[200] = 1.0 + 1e-9
    x[220] = 1.29  # < 1 + 6 × 5% of the mean
    assert feed(x)[0] == []
    x[240] = 1.31
    (a,), _ = feed(x)
    assert (a.step, a.rule) == (240, "spike")
    assert a.values["std"] < a.values["std_used"] == pytest.approx(0.05, rel=0.01)


def test_near_zero_losses_use_the_floor():
    # separable toy data: the loss sits near 0.02 and one batch costs 0.06 (3×, 8σ)
    rng = np.random.default_rng(0)
    x = 0.02 + 0.005 * rng.random(3000)
    x[::97] = 0.06
    assert feed(x)[0] == []
    # but a real blow-up from there still fires, at 3 × the floor
    y = np.concatenate([x, 0.02 * np.exp(np.arange(200) * 0.1)])
    (a,) = [a for a in feed(y)[0] if a.level == "alarm"]
    assert a.rule == "above_start" and a.values["threshold"] == 1.5


# ----- no false alarms ----------------------------------------------------------------------

@pytest.mark.parametrize("start, final, noise, steps", [
    (2.3, 1.6, 0.02, 3000),  # softmax, large batch
    (2.3, 1.6, 0.15, 5000),  # softmax, batch 32
    (9.0, 3.5, 0.25, 4000),  # SVM, batch 32
    (800.0, 5.0, 0.1, 4000),  # reg-dominated SVM start (λ = 2.5e4)
    (800.0, 5.0, 0.2, 3000),
    (0.7, 0.05, 0.3, 3000),  # 2-class toy data that trains to near zero
])
@pytest.mark.parametrize("seed", [0, 1])
def test_healthy_noisy_curves_raise_nothing(start, final, noise, steps, seed):
    x = curve(steps, start, final, noise, seed)
    alarms, m = feed(x, chunk=64)
    assert alarms == []
    assert m.healthy and not m.diverged


@pytest.mark.parametrize("start, final, noise", [(2.3, 1.6, 0.15), (9.0, 3.5, 0.25)])
def test_heavy_tailed_noise_raises_no_alarm(start, final, noise):
    x = curve(5000, start, final, noise, seed=7, heavy=True)
    alarms, _ = feed(x, chunk=100)
    assert [a for a in alarms if a.level == "alarm"] == []
    assert len(alarms) <= 3  # at most a rare spike warning on a skewed tail


@pytest.mark.parametrize("kind, lr, reg", [
    ("svm", 1e-5, 1e3), ("svm", 3e-5, 10.0), ("softmax", 1e-5, 1e3), ("softmax", 3e-5, 10.0),
])
@pytest.mark.parametrize("batch", [32, 256])
def test_real_sgd_at_a_good_lr_raises_nothing(kind, lr, reg, batch):
    losses, ratios = sgd(kind, lr, reg, batch, 3000)
    assert losses[-1] < losses[0] / 2  # it did train
    assert watch(losses, ratios) == []


@pytest.mark.parametrize("kind, factor, rule, within", [
    ("svm", 10, "ema_blowup", 60),
    ("svm", 100, "above_start", 2),
    ("softmax", 100, "above_start", 4),
    ("softmax", 1000, "above_start", 2),
])
def test_real_sgd_lr_blowup_is_caught(kind, factor, rule, within):
    lr = 3e-6
    losses, ratios = sgd(kind, lr, 2.5e4, 32, 1200, lr_after=lr * factor, at=1000)
    alarms = [a for a in watch(losses, ratios) if a.level == "alarm"]
    assert alarms and alarms[0].rule == rule
    assert 1000 < alarms[0].step <= 1000 + within


# ----- chunking, oracle, state changes ------------------------------------------------------

def _eventful_sequence():
    x = np.concatenate([
        curve(1500, 800, 5, 0.1, seed=4, tau=100),
        5 * np.exp(np.linspace(0, 6, 200)),
    ])
    x[700] = 12.0  # spike on the way down
    x[1200] = 40.0
    return x


def _chunkings(n, rng):
    random = list(rng.integers(1, 90, n))
    return [None, 1, 7, 128, 1000, random]


@pytest.mark.parametrize("with_nan", [False, True])
def test_any_chunking_gives_the_same_alarms_and_state(with_nan):
    x = _eventful_sequence()
    if with_nan:
        x[1000] = math.nan
    results = []
    for chunk in _chunkings(len(x), np.random.default_rng(0)):
        alarms, m = feed(x, chunk=chunk)
        state = (m.smoothed, m.best, m.baseline, m.healthy, m.diverged)
        results.append((repr([a.to_dict() for a in alarms]), repr(state)))
    assert all(r == results[0] for r in results)
    assert len(results[0][0]) > 50  # something fired


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_plain_oracle(seed):
    rng = np.random.default_rng(seed)
    x = curve(3000, rng.uniform(1, 50), rng.uniform(0.1, 2), rng.uniform(0.01, 0.4), seed)
    spikes = rng.integers(200, 3000, 8)
    x[spikes] *= rng.uniform(1.5, 4, 8)
    x[rng.integers(2000, 3000)] *= rng.choice([1.0, 40.0, math.inf])
    assert rules(feed(x, chunk=list(rng.integers(1, 300, 100)))[0]) == oracle(x)


def test_one_alarm_per_episode_then_rearm():
    m = DivergenceMonitor()
    x = np.full(100, 2.0)
    x[60:] = 100.0
    x[80] = math.nan
    assert rules(m.update(0, x)) == [(60, "above_start")]  # not again at 61.., nor for NaN
    assert m.diverged and m.last_alarm is not None and m.last_alarm.step == 60
    m.rearm()
    assert not m.diverged and m.healthy and math.isnan(m.baseline)
    # the next loss is the new baseline: 100 is normal now, 301 is 3× above it
    assert m.update(100, np.full(20, 100.0)) == [] and m.baseline == 100.0
    assert rules(m.update(120, [301.0])) == [(120, "above_start")]


def test_after_rescue_watches_the_restored_weights_afresh():
    m = DivergenceMonitor()
    healthy = curve(1500, 800, 5, 0.1, seed=2, tau=100)
    m.update(0, healthy)
    assert m.best < 6
    fired = [a for a in m.update(1500, 5 * np.exp(np.arange(100) * 0.1)) if a.level == "alarm"]
    assert [a.rule for a in fired] == ["ema_blowup"] and not m.healthy
    m.after_rescue()
    assert not m.diverged and m.healthy
    # the snapshot is from step 300 (loss ~40 > 4 × best 5): no alarm for it, it trains on
    restored = curve(1000, 40, 5, 0.1, seed=3, tau=100)
    assert m.update(1600, restored) == []
    # and a new divergence is caught again
    again = m.update(2600, 5 * np.exp(np.arange(100) * 0.2))
    assert [a.level for a in again if a.level == "alarm"] == ["alarm"] and m.diverged


def test_reset_forgets_everything():
    m = DivergenceMonitor()
    m.update(0, [2.0, math.nan])
    m.check_update_ratio(1, 5.0)
    m.reset()
    assert not m.diverged and m.healthy and m.last_alarm is None
    assert math.isnan(m.smoothed) and math.isnan(m.baseline) and math.isnan(m.best)
    assert m.update(0, [7.0, 7.0]) == [] and m.baseline == 7.0


def test_healthy_needs_a_margin_before_any_alarm():
    m = DivergenceMonitor(DivergenceConfig(spike_sigma=1000.0))  # spikes aside
    m.update(0, np.full(200, 2.0))
    assert m.healthy
    m.update(200, [3.9])  # rising, but nothing fires yet
    assert m.healthy
    assert m.update(201, [4.1]) == []  # no alarm (< 6 = 3 × start) ...
    assert not m.healthy  # ... but no snapshot should be taken here either
    m.update(202, np.full(300, 2.0))
    assert m.healthy


# ----- update ratio ---------------------------------------------------------------------------

def test_update_ratio_warns_only_when_sustained():
    m = DivergenceMonitor()
    p = CFG.ratio_patience
    # alternating above/below never warns
    assert all(m.check_update_ratio(s, 0.5 if s % 2 else 1e-3) is None for s in range(201))
    got = [m.check_update_ratio(1000 + s, 0.3) for s in range(3 * p)]
    fired = [w for w in got if w is not None]
    assert len(fired) == 1 and got[p - 1] is fired[0]  # once, at the p-th measurement
    w = fired[0]
    assert (w.step, w.rule, w.level) == (1000 + p - 1, "update_ratio", "warning")
    assert w.values == {"ratio": 0.3, "threshold": 0.1, "patience": float(p),
                        "streak": float(p)}
    assert not m.healthy and not m.diverged
    assert m.check_update_ratio(2000, 1e-3) is None and m.healthy  # streak over
    got = [m.check_update_ratio(3000 + s, math.nan) for s in range(p)]  # NaN counts as above
    assert got[-1] is not None and got[-1].values["ratio"] != got[-1].values["ratio"]


def test_update_ratio_is_quiet_while_diverged_and_reset_by_rearm():
    m = DivergenceMonitor()
    m.update(0, [2.0, math.inf])
    p = CFG.ratio_patience
    assert all(m.check_update_ratio(s, math.inf) is None for s in range(2 * p))
    m.rearm()
    got = [m.check_update_ratio(s, 0.2) for s in range(p)]
    assert got[-1] is not None and all(w is None for w in got[:-1])


# ----- robustness -----------------------------------------------------------------------------

@pytest.mark.parametrize("seq", [
    [math.nan] * 300,
    [math.inf, -math.inf, math.nan],
    [1e308, 1e308, 1e308, -1e308] * 100,
    [-math.inf] + [1.0] * 300,
    [0.0] * 300 + [1e-300, 1e308, 0.0],
    [],
])
def test_nonfinite_and_extreme_inputs_never_raise_or_print(seq, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alarms, m = feed(seq, chunk=7)
        for w in alarms:
            json.dumps(w.to_dict())
        _ = (m.healthy, m.smoothed, m.diverged, m.best, m.baseline)
        m.check_update_ratio(0, math.nan)
        m.check_update_ratio(1, -math.inf)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_huge_losses_heal_the_window_sum():
    # a start at 1e308 makes every threshold inf and the window's running sum overflow;
    # once the huge losses have left the window, its statistics are exact again
    m = DivergenceMonitor()
    assert m.update(0, np.full(200, 1e308)) == []
    x = np.full(300, 2.0)
    x[250] = 3.0
    assert rules(m.update(200, x)) == [(450, "spike")]


def test_alarm_is_plain_json():
    (a,), _ = feed([2.0, 9.0])
    d = a.to_dict()
    assert set(d) == {"step", "rule", "level", "loss", "detail", "values"}
    assert isinstance(a, Alarm) and all(type(v) is float for v in a.values.values())
    text = json.dumps(d)  # NaN is written as NaN, which Python's json reads back
    assert json.dumps(json.loads(text)) == text and "NaN" in text
