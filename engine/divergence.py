"""The divergence alarm: watch the per-step training loss and say when a run has blown up.

The trainer feeds every chunk of per-step losses to :meth:`DivergenceMonitor.update`; the
monitor evaluates every rule at every step and returns what fired, in step order. Rules
(thresholds in :class:`DivergenceConfig`; ``x_t`` is step t's loss, ``F = loss_floor``):

- ``nonfinite`` (alarm): ``x_t`` is NaN or ±inf.
- ``above_start`` (alarm): ``x_t > start_factor * max(B, F)``, where ``B`` is the first
  finite loss since the start (or the last rearm). CS231n's "3× the original loss" rule.
- ``ema_blowup`` (alarm): ``e_t > ema_factor * max(best, F)``, where ``e_t`` is the
  debiased EMA of the finite losses, ``m_t = β m + (1-β) x_t``, ``e_t = m_t / (1 - β^n)``
  (n finite losses so far, as in Adam's bias correction) and ``best`` is the smallest
  ``e`` seen from the ``warmup``-th finite loss on. Fires only after ``warmup`` losses.
  The LR-finder rule: a run that starts reg-dominated at ~800 and trains to ~5 alarms
  when the smoothed loss passes 20, long before it could pass 3× 800.
- ``spike`` (warning): ``x_t > μ + spike_sigma * max(σ, spike_rel_floor * max(|μ|, F))``,
  where μ, σ are the mean and (population) std of the previous ``spike_window`` finite
  losses; needs a full window; at most one spike warning per ``spike_window`` steps.
- ``update_ratio`` (warning, :meth:`DivergenceMonitor.check_update_ratio`): the ratio
  ‖ΔW‖/‖W‖ (CS231n: about 1e-3 is healthy) stays above ``ratio_warn`` for
  ``ratio_patience`` consecutive measurements; one warning per such stretch.

An alarm makes the monitor *diverged*: no further alarm or warning until :meth:`rearm`,
:meth:`after_rescue` or :meth:`reset` (one alarm per divergence episode). ``F`` keeps the
ratio rules sane near zero loss (separable toy data), where a ratio of tiny noisy losses
says nothing about divergence. The scan is a Numba kernel that carries its state from
chunk to chunk, so any chunking of the same losses gives the same alarms at the same steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from numba import njit

RULES = ("nonfinite", "above_start", "ema_blowup", "spike", "update_ratio")
"""Rule names, as they appear in :attr:`Alarm.rule`, events and recordings."""

_NONFINITE, _ABOVE_START, _EMA_BLOWUP, _SPIKE = 0, 1, 2, 3
_NVALS = 4
"""Float slots per event returned by the kernel (meaning depends on the rule)."""

# Kernel state: floats and ints carried between chunks (indices into _f / _i).
_F_BASELINE, _F_M, _F_BETA_POW, _F_BEST, _F_EMA, _F_LAST, _F_SUM = range(7)
_I_COUNT, _I_DIVERGED, _I_FILLED, _I_POS, _I_LAST_SPIKE, _I_LAST_STEP = range(6)
_NO_STEP = -(2**62)
"""A step long before any real one (so cooldowns are over at the start)."""


@dataclass(frozen=True)
class DivergenceConfig:
    """Thresholds of the divergence rules (see the module docstring for the exact rules)."""

    start_factor: float = 3.0  # alarm: loss > start_factor * loss at the start (baseline)
    ema_factor: float = 4.0  # alarm: smoothed loss > ema_factor * best smoothed loss so far
    ema_beta: float = 0.98  # EMA decay (fastai's LR finder); memory ≈ 1/(1-β) = 50 steps
    spike_sigma: float = 6.0  # warning: loss > mean + spike_sigma * std of the window
    spike_window: int = 128  # steps in the spike window; also the spike warning cooldown
    spike_rel_floor: float = 0.05  # std floor as a fraction of |mean|, so a spike is also
    # ≥ 6 × 5% = 30% above the mean: a flat full-batch curve has std ~0 (a 1e-6 wiggle must
    # not be a 6σ spike), and a reg-dominated SVM loss has std ~2% (one hard batch, +13%)
    ratio_warn: float = 0.1  # warning: update-norm / weight-norm stays above this ...
    ratio_patience: int = 20  # ... for this many consecutive measurements
    warmup: int = 50  # finite losses before the EMA rule may fire and before `best` is
    # tracked: ≈ the EMA's memory, so `best` is an average of ~50 losses, never one lucky
    # noisy batch that a later, normal EMA would be 4× above
    loss_floor: float = 0.5  # baseline, best and |mean| count as at least this: below
    # about the smallest chance-level loss (ln 2 ≈ 0.69) a loss is near zero, and ratios of
    # near-zero losses (separable toy data, one hard batch: 0.02 → 0.06) are noise
    healthy_factor: float = 2.0  # healthy (weight snapshots allowed) only while the loss
    # and its EMA are ≤ healthy_factor * best smoothed loss (start loss during warmup)

    def __post_init__(self) -> None:
        for name in ("start_factor", "ema_factor", "healthy_factor"):
            _check(name, getattr(self, name), lambda v: v > 1.0, "a number > 1")
        _check("ema_beta", self.ema_beta, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
        for name in ("spike_sigma", "ratio_warn", "loss_floor"):
            _check(name, getattr(self, name), lambda v: v > 0.0, "a number > 0")
        _check("spike_rel_floor", self.spike_rel_floor, lambda v: v >= 0.0, "a number >= 0")
        for name, low in (("spike_window", 2), ("ratio_patience", 1), ("warmup", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"divergence {name} must be a whole number >= {low}, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, v: Any, ok: Any, what: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
        raise ValueError(f"divergence {name} must be {what}, got {v!r}")


@dataclass(frozen=True)
class Alarm:
    """A rule that fired at a step: an alarm (the run diverged) or a warning (logged only)."""

    step: int
    """The step whose loss (or update ratio) fired the rule."""
    rule: str
    """One of RULES: nonfinite, above_start, ema_blowup, spike, update_ratio."""
    level: str
    """"alarm" (apply --on-diverge: pause, rescue, stop) or "warning" (log only)."""
    loss: float
    """The loss at ``step`` (NaN for update_ratio warnings when no loss was seen yet)."""
    detail: str
    """One human line, e.g. "loss 2613.2 > 3× start loss 2.30 at step 1840"."""
    values: dict[str, float] = field(default_factory=dict)
    """The numbers that fired (threshold, baseline, ema, best, mean, std, ratio ...) as
    plain floats; NaN and inf stay floats."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@njit(cache=True, nogil=True)
def _scan(start_step, losses, fs, st, buf, params, out_step, out_rule, out_vals):
    """Evaluate the loss rules at every step of a chunk, carrying state in fs/st/buf.

    No fastmath: the rules depend on NaN and inf comparing the IEEE way.

    Args:
        start_step: step index of ``losses[0]``.
        losses: (n,) float64 per-step losses.
        fs: (7,) float64 state (baseline, EMA accumulator, β^count, best, EMA, last loss,
            sum of the ring buffer).
        st: (6,) int64 state (finite count, diverged, window fill, window pos,
            last spike step, last step).
        buf: (W,) float64 ring buffer of the last W finite losses.
        params: (7,) float64 start_factor, ema_factor, β, spike_sigma, spike_rel_floor,
            loss_floor, warmup.
        out_step, out_rule, out_vals: (≥n,), (≥n,), (≥n, 4) outputs for the events.

    Returns:
        The number of events written to the outputs.
    """
    start_factor, ema_factor, beta = params[0], params[1], params[2]
    sigma, rel_floor, floor, warmup = params[3], params[4], params[5], params[6]
    window = buf.shape[0]
    n_out = 0
    for k in range(losses.shape[0]):
        x = losses[k]
        step = start_step + k
        st[_I_LAST_STEP] = step
        fs[_F_LAST] = x
        diverged = st[_I_DIVERGED] != 0
        if not np.isfinite(x):
            if not diverged:
                st[_I_DIVERGED] = 1
                out_step[n_out] = step
                out_rule[n_out] = _NONFINITE
                out_vals[n_out, 0] = fs[_F_BASELINE]
                out_vals[n_out, 1] = fs[_F_EMA]
                out_vals[n_out, 2] = fs[_F_BEST]
                out_vals[n_out, 3] = np.nan
                n_out += 1
            continue  # a non-finite loss never enters the EMA or the window

        if np.isnan(fs[_F_BASELINE]):
            fs[_F_BASELINE] = x
        count = st[_I_COUNT] + 1
        st[_I_COUNT] = count
        fs[_F_M] = beta * fs[_F_M] + (1.0 - beta) * x
        fs[_F_BETA_POW] *= beta
        ema = fs[_F_M] / (1.0 - fs[_F_BETA_POW])
        fs[_F_EMA] = ema
        best = fs[_F_BEST]

        if not diverged:
            rule = -1
            v0 = v1 = v2 = v3 = 0.0
            threshold = start_factor * max(fs[_F_BASELINE], floor)
            if x > threshold:
                rule = _ABOVE_START
                v0, v1, v2, v3 = threshold, fs[_F_BASELINE], ema, best
            elif count > warmup and ema > ema_factor * max(best, floor):
                rule = _EMA_BLOWUP
                v0, v1, v2, v3 = ema_factor * max(best, floor), fs[_F_BASELINE], ema, best
            elif st[_I_FILLED] == window and step - st[_I_LAST_SPIKE] >= window:
                # window statistics of the previous losses (x has not entered yet);
                # the second pass only runs when x could be a spike at all
                mean = fs[_F_SUM] / window
                std_floor = rel_floor * max(abs(mean), floor)
                if x > mean + sigma * std_floor:
                    var = 0.0
                    for j in range(window):
                        d = buf[j] - mean
                        var += d * d
                    std = np.sqrt(var / window)
                    std_used = max(std, std_floor)
                    limit = mean + sigma * std_used
                    if x > limit:
                        rule = _SPIKE
                        v0, v1, v2, v3 = limit, mean, std, std_used
                        st[_I_LAST_SPIKE] = step
            if rule >= 0:
                if rule != _SPIKE:
                    st[_I_DIVERGED] = 1
                out_step[n_out] = step
                out_rule[n_out] = rule
                out_vals[n_out, 0] = v0
                out_vals[n_out, 1] = v1
                out_vals[n_out, 2] = v2
                out_vals[n_out, 3] = v3
                n_out += 1

        if count >= warmup and not ema >= best:  # `not >=`: best is NaN until warmup
            fs[_F_BEST] = ema
        pos = st[_I_POS]
        fs[_F_SUM] += x - buf[pos]  # buf starts as zeros, so this also fills it
        buf[pos] = x
        pos = (pos + 1) % window
        st[_I_POS] = pos
        if pos == 0:  # once per lap, the exact sum: no drift, and an inf/NaN sum heals
            total = 0.0
            for j in range(window):
                total += buf[j]
            fs[_F_SUM] = total
        if st[_I_FILLED] < window:
            st[_I_FILLED] += 1
    return n_out


class DivergenceMonitor:
    """Evaluates the divergence rules on a run's losses, chunk by chunk.

    Used from the trainer thread only. ``smoothed``, ``diverged`` and ``healthy`` are plain
    reads, cheap enough to call once per chunk.
    """

    def __init__(self, config: DivergenceConfig = DivergenceConfig()) -> None:  # noqa: B008
        if not isinstance(config, DivergenceConfig):
            raise TypeError(f"config must be a DivergenceConfig, got {type(config).__name__}")
        self.config = config
        self._f = np.empty(7, dtype=np.float64)
        self._i = np.empty(6, dtype=np.int64)
        self._buf = np.zeros(config.spike_window, dtype=np.float64)
        c = config
        self._params = np.array([c.start_factor, c.ema_factor, c.ema_beta, c.spike_sigma,
                                 c.spike_rel_floor, c.loss_floor, c.warmup], dtype=np.float64)
        self._out_step = np.empty(256, dtype=np.int64)
        self._out_rule = np.empty(256, dtype=np.int64)
        self._out_vals = np.empty((256, _NVALS), dtype=np.float64)
        self._last_alarm: Alarm | None = None
        self.reset()

    # ----- state changes -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: a fresh monitor with the same config."""
        self._i[_I_LAST_STEP] = _NO_STEP
        self._last_alarm = None
        self._arm()

    def rearm(self) -> None:
        """Start watching afresh from the next loss, which becomes the new baseline.

        Call after the loss *function* changed (reset of W, a loss-kind or λ change, a new
        dataset, a fork) and when the user resumes after an alarm: clears ``diverged``, the
        baseline, the EMA and its best, the spike window and the update-ratio streak.
        """
        self._arm()

    def after_rescue(self) -> None:
        """Weights were restored to a healthy snapshot and lr divided: watch them afresh.

        Same as :meth:`rearm`: the restored weights' loss becomes the baseline, so if the
        smaller lr still diverges the alarm fires again (and the trainer can rescue again).
        The old best EMA is deliberately dropped: the snapshot may be older than the best
        loss, and comparing it with that best would raise a false alarm at once.
        """
        self._arm()

    def _arm(self) -> None:
        self._f[:] = (np.nan, 0.0, 1.0, np.nan, np.nan, np.nan, 0.0)
        last_step = self._i[_I_LAST_STEP]
        self._i[:] = (0, 0, 0, 0, _NO_STEP, last_step)
        self._buf[:] = 0.0
        self._ratio_streak = 0
        self._ratio_warned = False

    # ----- the rules -----------------------------------------------------------------------

    def update(self, start_step: int, losses: np.ndarray) -> list[Alarm]:
        """Evaluate every rule at every step of a chunk of per-step training losses.

        Args:
            start_step: step index of ``losses[0]``; the chunk covers steps
                ``start_step .. start_step + len(losses) - 1``.
            losses: (n,) per-step losses (converted to float64); NaN and inf allowed.

        Returns:
            The alarms and warnings that fired, in step order (usually empty).
        """
        x = np.ascontiguousarray(losses, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"losses must be a 1-D array of per-step losses, got shape {x.shape}")
        n = x.shape[0]
        if n == 0:
            return []
        if self._out_step.shape[0] < n:  # event buffers, reused across chunks
            self._out_step = np.empty(n, dtype=np.int64)
            self._out_rule = np.empty(n, dtype=np.int64)
            self._out_vals = np.empty((n, _NVALS), dtype=np.float64)
        n_out = _scan(int(start_step), x, self._f, self._i, self._buf, self._params,
                      self._out_step, self._out_rule, self._out_vals)
        alarms = [
            self._make(int(self._out_step[k]), int(self._out_rule[k]),
                       float(x[self._out_step[k] - start_step]),
                       [float(v) for v in self._out_vals[k]])
            for k in range(n_out)
        ]
        for a in alarms:
            if a.level == "alarm":
                self._last_alarm = a
        return alarms

    def check_update_ratio(self, step: int, ratio: float) -> Alarm | None:
        """Record one measurement of ‖ΔW‖/‖W‖; warn when it stays above ``ratio_warn``.

        CS231n: about 1e-3 is healthy. One step's update over the weights, measured by the
        trainer (e.g. once per chunk). A NaN ratio counts as above; nothing here raises.

        Args:
            step: the step the update belongs to.
            ratio: ``lr * ‖dW‖ / ‖W‖`` (any float; NaN and inf allowed).

        Returns:
            The warning when the streak reaches ``ratio_patience`` measurements (once per
            streak, and never while diverged), else None.
        """
        r = float(ratio)
        if r <= self.config.ratio_warn:  # NaN compares False: counts as above
            self._ratio_streak = 0
            self._ratio_warned = False
            return None
        self._ratio_streak += 1
        if (self._ratio_warned or self.diverged
                or self._ratio_streak < self.config.ratio_patience):
            return None
        self._ratio_warned = True
        c = self.config
        return Alarm(
            step=int(step), rule="update_ratio", level="warning", loss=float(self._f[_F_LAST]),
            detail=(f"update/weight norm ratio {_num(r)} > {_num(c.ratio_warn)} for "
                    f"{self._ratio_streak} measurements in a row at step {int(step)} "
                    f"(healthy ≈ 1e-3): lr may be too high"),
            values={"ratio": r, "threshold": float(c.ratio_warn),
                    "patience": float(c.ratio_patience), "streak": float(self._ratio_streak)},
        )

    # ----- what the trainer and the UI read -----------------------------------------------

    @property
    def diverged(self) -> bool:
        """An alarm fired and has not been cleared by rearm, after_rescue or reset."""
        return bool(self._i[_I_DIVERGED])

    @property
    def healthy(self) -> bool:
        """No rule is firing now, with a margin: a weight snapshot taken now is a good one.

        True when not diverged, the last loss is finite, it and the EMA are at most
        ``healthy_factor`` × the best EMA (the start loss during warmup), no spike warning
        in the last ``spike_window`` steps and no update-ratio warning in force.
        True before the first loss.
        """
        c = self.config
        if self.diverged or self._ratio_streak >= c.ratio_patience:
            return False
        last = self._f[_F_LAST]
        if np.isnan(self._f[_F_BASELINE]):
            return True  # no loss since (re)arming (a non-finite one would have diverged)
        if not math.isfinite(last):
            return False
        best = self._f[_F_BEST]
        ref = max(self._f[_F_BASELINE] if math.isnan(best) else best, c.loss_floor)
        limit = c.healthy_factor * ref
        if last > limit or self._f[_F_EMA] > limit:
            return False
        return self._i[_I_LAST_STEP] - self._i[_I_LAST_SPIKE] >= c.spike_window

    @property
    def smoothed(self) -> float:
        """The current debiased EMA of the finite losses (NaN before the first one)."""
        return float(self._f[_F_EMA])

    @property
    def baseline(self) -> float:
        """The start loss the above_start rule compares with (NaN before the first one)."""
        return float(self._f[_F_BASELINE])

    @property
    def best(self) -> float:
        """The smallest EMA since the warmup (NaN before it)."""
        return float(self._f[_F_BEST])

    @property
    def last_alarm(self) -> Alarm | None:
        """The most recent alarm (not warning), for the banner; kept until reset."""
        return self._last_alarm

    # ----- building the Alarm objects (rare: only when something fired) --------------------

    def _make(self, step: int, rule: int, loss: float, v: list[float]) -> Alarm:
        c = self.config
        if rule == _NONFINITE:
            return Alarm(
                step, "nonfinite", "alarm", loss,
                f"loss is {_num(loss)} at step {step}: weights or lr blew up",
                {"loss": loss, "baseline": v[0], "ema": v[1], "best": v[2]},
            )
        if rule == _ABOVE_START:
            return Alarm(
                step, "above_start", "alarm", loss,
                f"loss {_num(loss)} > {c.start_factor:g}× start loss {_num(v[1])} at step {step}",
                {"loss": loss, "threshold": v[0], "baseline": v[1], "factor": c.start_factor,
                 "ema": v[2], "best": v[3]},
            )
        if rule == _EMA_BLOWUP:
            return Alarm(
                step, "ema_blowup", "alarm", loss,
                f"smoothed loss {_num(v[2])} > {c.ema_factor:g}× best smoothed loss "
                f"{_num(v[3])} at step {step}",
                {"loss": loss, "threshold": v[0], "baseline": v[1], "ema": v[2], "best": v[3],
                 "factor": c.ema_factor},
            )
        return Alarm(
            step, "spike", "warning", loss,
            f"loss spike {_num(loss)} > mean {_num(v[1])} + {c.spike_sigma:g}σ "
            f"(σ {_num(v[3])}) of the last {c.spike_window} steps at step {step}",
            {"loss": loss, "threshold": v[0], "mean": v[1], "std": v[2], "std_used": v[3],
             "sigma": c.spike_sigma},
        )


def _num(x: float) -> str:
    """A loss for humans: 2613.2, 2.30, 0.047, 1.2e+09, nan, inf."""
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1e6 or (0 < a < 0.01):
        return f"{x:.3g}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 1 or a == 0:
        return f"{x:.2f}"
    return f"{x:.3f}"
