"""``descent bench``: engine speed against the numpy reference, in one table, one process.

Workload: random CIFAR-shaped data, X (49000, 3073) float32 (bias column included; each row
on a 64-byte cache line, as the datasets lay them out: ``engine.data.aligned_rows``), 10
classes, batch rows sampled with replacement. Engine and reference are timed interleaved
(A B A B ..., the median of REPEATS runs each, a short pause before each so one library's
idle spinning threads do not slow the other), so a noisy neighbour hits both alike; a ratio
is the median of the rounds' ratios, since the machine's speed drifts between rounds:

- SGD steps/s and samples/s for both losses and B in BATCHES, through ``optim.run_steps``
  as the trainer runs them (indices drawn per step, one kernel call per timed run, about
  RUN_SECONDS long). The reference is CS231n's
  vectorized step in float32 numpy: ``Xb = X[idx]``, ``scores = Xb @ W``, then
  ``dW = Xb.T @ coeff`` (a gather and 2 sgemm, numpy's BLAS threads).
- The flop bound: 4·B·D·C flops per step at the sgemm peak measured in this run.
- Full-batch GD on all 49000 rows against the time to stream X once (a BLAS sgemv), and
  its flop bound (4·N·D·C flops at the sgemm peak) in the same units; then the step against
  the larger of the two (its roofline: what binds it, memory or arithmetic).
- A GD-shaped probe: X read once the way the block kernels read it, with GD's 20 FMAs per
  64-byte line on registers and nothing else; with its streaming and its arithmetic timed
  alone, it says how far this machine overlaps the two, and so what a GD step could take.
- Random-search proposals/s (the current W and a candidate scored on the same batch).
- Cold and warm Numba compile times, each in a fresh subprocess (cold: empty cache dir).

Adding rows: call :func:`add_section` with a title and a function ``fn(ctx) -> rows``
(ctx is the :class:`Context`: the data, the sgemm peak, and a ``timed`` helper); each row
is ``(workload, engine, reference, ratio, note)`` strings. Sections run after the built-in
ones, inside the same table, e.g. from tui/cli.py before calling main()::

    bench.add_section("dashboard", lambda ctx: [("UI open, B=256", "2900/s", ...)])
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange

from engine import kernels, optim
from engine.data import aligned_rows
from engine.simd import LANES, vfma, vload, vsplat, vsum

N_ROWS, DIMS, CLASSES = 49_000, 3073, 10
BATCHES = (32, 128, 256, 1024)
REPEATS = 5
"""Timed runs per measurement (the median is reported)."""
RUN_SECONDS = 0.12
"""Target length of one timed run."""
SETTLE_SECONDS = 0.15
"""Pause before each timed run: after a call OpenBLAS's worker threads busy-wait for about
0.1 s (and OpenMP's briefly), stealing a core from whatever is timed next; measured here,
the engine right after an sgemm ran 40% slower. The trainer never interleaves the two."""
LR, REG = 1e-7, 2.5e4
"""CS231n's SVM settings on 0-255 pixels (speed does not depend on them)."""

Row = tuple[str, str, str, str, str]
"""(workload, engine, reference, ratio, note)."""


@dataclass
class Context:
    """What every section can use."""

    X: np.ndarray
    """(N, D) float32 rows, last column 1.0."""
    y: np.ndarray
    """(N,) int32 labels."""
    W: np.ndarray
    """(D, C) float32 starting weights (copy before mutating)."""
    rng: np.random.Generator
    repeats: int = REPEATS
    peak_gflops: float = 0.0
    """Measured sgemm peak of this machine, GFLOP/s."""
    notes: list[str] = field(default_factory=list)
    ratio: float = float("nan")
    """The last :meth:`timed` call's engine/reference ratio (median of the rounds')."""
    rates: list[list[float]] = field(default_factory=list)
    """The last :meth:`timed` call's rates, one list per function."""

    def timed(self, fns: list[Callable[[], int]]) -> list[float]:
        """Run fns interleaved (A B A B ...) `repeats` times; each returns how many units
        it did. Returns the median units per second of each; ``ratio`` is then the median
        over the rounds of fns[0]'s rate / fns[1]'s (robust to the machine's speed drifting
        between rounds: a round's runs are close in time)."""
        rates: list[list[float]] = [[] for _ in fns]
        for _ in range(self.repeats):
            for k, fn in enumerate(fns):
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                units = fn()
                rates[k].append(units / (time.perf_counter() - start))
        self.rates = rates
        if len(fns) > 1:
            self.ratio = self.pair_ratio(0, 1)
        return [statistics.median(r) for r in rates]

    def pair_ratio(self, i: int, j: int) -> float:
        """Median over the last :meth:`timed` call's rounds of fns[i]'s rate / fns[j]'s."""
        return median_ratio(self.rates[i], self.rates[j])


def flop_bound_ms(rows: int, dims: int, classes: int, peak_gflops: float) -> float:
    """Milliseconds a loss-and-gradient pass over rows x dims takes at the sgemm peak:
    4·rows·dims·classes flops (scores and gradient, a multiply and an add each)."""
    return 1e3 * 4.0 * rows * dims * classes / (peak_gflops * 1e9)


def roofline_ratio(step_rates: list[float], stream_rates: list[float], floor_ms: float) -> float:
    """Median over paired rounds of a step's time / its roofline, the larger of the time to
    stream X once (that round's sgemv) and the flop bound: how far the step is from what the
    machine allows, whichever of memory and arithmetic binds."""
    return statistics.median((1.0 / e) / max(1.0 / s, floor_ms / 1e3)
                             for e, s in zip(step_rates, stream_rates, strict=True))


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over paired runs of num[k] / den[k]: robust to the machine's speed drifting
    between pairs (±20% over seconds on a shared VM), since a pair's runs are close in
    time. The ratio of the two medians would mix that drift into the comparison."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


_EXTRA: list[tuple[str, Callable[[Context], list[Row]]]] = []


def add_section(title: str, fn: Callable[[Context], list[Row]]) -> None:
    """Append a section (rows from ``fn(ctx)``) to the table printed by :func:`main`."""
    _EXTRA.append((title, fn))


# ------------------------------------------------------------------------------ reference
def _reference_step(Xb, yb, W, loss_kind, lr, reg):
    """One CS231n vectorized loss/gradient/update on rows Xb, float32 (2 sgemm)."""
    rows_b = np.arange(Xb.shape[0])
    scores = Xb @ W
    if loss_kind == kernels.SVM:
        margins = scores - scores[rows_b, yb][:, None] + 1.0
        margins[rows_b, yb] = 0.0
        positive = margins > 0
        loss = margins[positive].sum() / len(rows_b)
        coeff = positive.astype(np.float32)
        coeff[rows_b, yb] = -coeff.sum(axis=1)
    else:
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        probs = exp / exp.sum(axis=1, keepdims=True)
        loss = -np.log(probs[rows_b, yb]).sum() / len(rows_b)
        coeff = probs
        coeff[rows_b, yb] -= 1.0
    loss += reg * np.sum(W * W)
    dW = Xb.T @ coeff
    dW /= len(rows_b)
    dW += np.float32(2 * reg) * W
    W -= np.float32(lr) * dW
    return loss


def _reference_sgd(X, y, W, idx, loss_kind, lr, reg):
    """CS231n vectorized SGD steps in float32 numpy: gather X[idx] + 2 sgemm per step."""
    for rows in idx:
        _reference_step(X[rows], y[rows], W, loss_kind, lr, reg)


def _reference_random_search(X, y, W, idx, rng, scale):
    rows_b = np.arange(idx.shape[1])
    best = np.inf
    for rows in idx:
        Xb = X[rows]
        yb = y[rows]
        cand = rng.standard_normal(W.shape, dtype=np.float32) * np.float32(scale)
        losses = []
        for M in (W, cand):
            scores = Xb @ M
            margins = np.maximum(0, scores - scores[rows_b, yb][:, None] + 1.0)
            margins[rows_b, yb] = 0.0
            losses.append(margins.sum() / len(rows))
        if losses[1] < losses[0]:
            W[...] = cand
            best = losses[1]
    return best


# ------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    try:
        info = np.__config__.CONFIG["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - numpy's config layout varies between versions
        return "unknown BLAS"


def machine_line() -> str:
    """CPU, cores, library versions, BLAS, threading layer and current load."""
    import numba

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    layer: str
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = kernels.THREADING_LAYER + " (not yet loaded)"
    mode = "auto" if kernels._THREADS is None else "fixed"
    return (f"{_cpu_model()}, {os.cpu_count()} cores | numpy {np.__version__} ({_blas()}) | "
            f"numba {numba.__version__}, threading layer {layer}, "
            f"{kernels.threads_in_use()} kernel thread(s) ({mode}), {kernels.NPART} parts | "
            f"load avg {load:.2f}")


def _sgemm_peak(repeats: int) -> float:
    n = 2048
    a = np.ones((n, n), np.float32)
    b = np.ones((n, n), np.float32)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


# ------------------------------------------------------------------------------ sections
def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def _calibrate(run: Callable[[int], None], probe: int = 4) -> int:
    """Steps per timed run so that one run lasts about RUN_SECONDS (measured, not guessed:
    a loaded machine gets shorter runs instead of a longer benchmark)."""
    time.sleep(SETTLE_SECONDS)  # the reference's OpenBLAS threads stop spinning first
    run(probe)  # first call: caches warm, any lazy compile done
    per_step = float("inf")
    for _ in range(3):  # best of 3: one slow call (a thread waking up) must not shrink runs
        start = time.perf_counter()
        run(probe)
        per_step = min(per_step, (time.perf_counter() - start) / probe)
    return max(probe, min(20_000, int(RUN_SECONDS / max(per_step, 1e-7))))


def section_sgd(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    X, y = ctx.X, ctx.y
    for B in BATCHES:
        flops = 4.0 * B * DIMS * CLASSES
        for kind, name in ((kernels.SVM, "svm"), (kernels.SOFTMAX, "softmax")):
            W_e, W_r = ctx.W.copy(), ctx.W.copy()

            params = optim.StepParams(loss_kind=kind, lr=LR, reg=REG, batch_size=B)

            def run_engine(n, W_e=W_e, params=params):
                optim.run_steps("sgd", X, y, W_e, ctx.rng, params, n, np.empty(n), np.empty(n))

            def run_ref(n, W_r=W_r, kind=kind, B=B):
                _reference_sgd(X, y, W_r, ctx.rng.integers(0, N_ROWS, (n, B)), kind, LR, REG)

            n_eng = _calibrate(run_engine)
            n_ref = _calibrate(run_ref)
            idx_r = ctx.rng.integers(0, N_ROWS, (n_ref, B))
            out_d, out_r = np.empty(n_eng), np.empty(n_eng)
            idx_buf = np.empty((n_eng, B), dtype=np.int64)

            def engine(W_e=W_e, params=params, n=n_eng, out_d=out_d, out_r=out_r,
                       idx_buf=idx_buf):
                # The trainer's path: batch indices drawn per step, then one kernel call.
                optim.run_steps("sgd", X, y, W_e, ctx.rng, params, n, out_d, out_r, idx_buf)
                return n

            def ref(W_r=W_r, idx_r=idx_r, kind=kind):
                _reference_sgd(X, y, W_r, idx_r, kind, LR, REG)
                return idx_r.shape[0]

            engine()  # untimed: the kernels' first call of a new size probes 1 thread
            eng, refr = ctx.timed([engine, ref])
            bound = ctx.peak_gflops * 1e9 / flops
            rows.append((f"sgd {name:7s} B={B:<5d}", f"{_fmt(eng)} steps/s",
                         f"{_fmt(refr)} steps/s", f"{ctx.ratio:.2f}x",
                         f"{_fmt(eng * B)} samples/s, {100 * eng / bound:.0f}% of flop bound "
                         f"({_fmt(bound)} steps/s), {n_eng} steps per call"))
    return rows


def section_gd(ctx: Context) -> list[Row]:
    X, y = ctx.X, ctx.y
    v = np.ones(DIMS, np.float32)
    rows: list[Row] = []
    for kind, name in ((kernels.SVM, "svm"), (kernels.SOFTMAX, "softmax")):
        W_e = ctx.W.copy()
        out_d, out_r = np.empty(1), np.empty(1)

        def engine(W_e=W_e, kind=kind, out_d=out_d, out_r=out_r):
            kernels.gd_steps(X, y, W_e, LR, REG, kind, out_d, out_r, 1)
            return 1

        def ref(kind=kind):
            _reference_step(X, y, ctx.W.copy(), kind, LR, REG)  # no gather: all rows
            return 1

        def stream():
            X @ v
            return 1

        engine()
        stream()
        eng, refr, st = ctx.timed([engine, ref, stream])
        floor_ms = flop_bound_ms(X.shape[0], X.shape[1], ctx.W.shape[1], ctx.peak_gflops)
        rows.append((f"gd {name:8s} N={N_ROWS}", f"{1e3 / eng:.1f} ms/step",
                     f"{1e3 / refr:.1f} ms/step", f"{ctx.ratio:.2f}x",
                     f"{ctx.pair_ratio(2, 0):.2f}x the time to stream X once "
                     f"({1e3 / st:.1f} ms, {X.nbytes * st / 1e9:.0f} GB/s sgemv); "
                     f"flop bound {floor_ms:.1f} ms = {floor_ms * st / 1e3:.2f}x; "
                     f"{roofline_ratio(ctx.rates[0], ctx.rates[2], floor_ms):.2f}x "
                     f"the larger of the two"))
    return rows


# ------------------------------------------------------------------ GD's ceiling here
PROBE_FMAS = 20
"""Vector FMAs per 64-byte line of X in the GD probe, as many as a GD step does (each 16
floats of a row meet 10 classes' weights in the scores and 10 coefficients in the
gradient)."""
PROBE_WINDOW = 128
"""Rows each part of the probe's arithmetic-only run cycles over (1.5 MB of CIFAR rows,
which stay in that core's L2)."""


@njit(cache=True, nogil=True, fastmath=kernels.FASTMATH)
def _probe_part(X, dims, lo, hi, window, rounds):
    """Read rows lo..hi-1 of X (their first dims floats) the way the block kernels do, 4
    rows at a time over tiles of DIM_TILE dims (the i-th row read is row
    lo + (i - lo) % window), each whole 64-byte vector once, and do 4 * rounds FMAs on
    each into 16 register accumulators (rounds = 0: one add). Nothing else touches
    memory: GD's streaming and arithmetic, nothing more. Returns the sum of the
    accumulators' lanes."""
    one = vsplat(1.0)
    a0 = vsplat(0.0)
    a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = a0
    dv = dims - dims % LANES
    for i in range(lo, hi, 4):
        if i + 4 > hi:  # the last rows, one at a time
            for j in range(i, hi):
                x = X[lo + (j - lo) % window]
                for d in range(0, dv, LANES):
                    e = vload(x, d)
                    a0 = vfma(e, one, a0)
                    for _ in range(4 * rounds - 1):
                        a1 = vfma(e, one, a1)
            break
        x0 = X[lo + (i - lo) % window]
        x1 = X[lo + (i + 1 - lo) % window]
        x2 = X[lo + (i + 2 - lo) % window]
        x3 = X[lo + (i + 3 - lo) % window]
        for t0 in range(0, dv, kernels.DIM_TILE):
            for d in range(t0, min(t0 + kernels.DIM_TILE, dv), LANES):
                e0 = vload(x0, d)
                e1 = vload(x1, d)
                e2 = vload(x2, d)
                e3 = vload(x3, d)
                if rounds == 0:
                    a0 = vfma(e0, one, a0)
                    a1 = vfma(e1, one, a1)
                    a2 = vfma(e2, one, a2)
                    a3 = vfma(e3, one, a3)
                for _ in range(rounds):
                    a0 = vfma(e0, one, a0)
                    a1 = vfma(e1, one, a1)
                    a2 = vfma(e2, one, a2)
                    a3 = vfma(e3, one, a3)
                    a4 = vfma(e0, one, a4)
                    a5 = vfma(e1, one, a5)
                    a6 = vfma(e2, one, a6)
                    a7 = vfma(e3, one, a7)
                    a8 = vfma(e0, one, a8)
                    a9 = vfma(e1, one, a9)
                    a10 = vfma(e2, one, a10)
                    a11 = vfma(e3, one, a11)
                    a12 = vfma(e0, one, a12)
                    a13 = vfma(e1, one, a13)
                    a14 = vfma(e2, one, a14)
                    a15 = vfma(e3, one, a15)
    return (vsum(a0) + vsum(a1) + vsum(a2) + vsum(a3) + vsum(a4) + vsum(a5) + vsum(a6)
            + vsum(a7) + vsum(a8) + vsum(a9) + vsum(a10) + vsum(a11) + vsum(a12)
            + vsum(a13) + vsum(a14) + vsum(a15))


@njit(cache=True, nogil=True, parallel=True)
def _probe(X, dims, window, rounds, nparts, out):
    """:func:`_probe_part` over nparts contiguous parts of X's rows, in parallel."""
    n = X.shape[0]
    for p in prange(nparts):
        lo, hi = (n * p) // nparts, (n * (p + 1)) // nparts
        out[p] = _probe_part(X, dims, lo, hi, max(1, min(window, hi - lo)), rounds)


def overlap(stream_ms: float, arith_ms: float, both_ms: float) -> float:
    """How much of the shorter of two activities hid under the other when run together:
    1 when the pair took as long as the longer alone, 0 when it took their sum."""
    return (stream_ms + arith_ms - both_ms) / min(stream_ms, arith_ms)


def section_probe(ctx: Context) -> list[Row]:
    """What a GD step could take on this machine: a probe kernel reads X once as the block
    kernels do, with GD's FMAs per byte on registers and nothing else (no weights, no
    losses, no gradient stores). Timed together with the same probe on cache-resident rows
    (its arithmetic alone), without the FMAs (its streaming alone) and the sgemv the GD
    rows call the time to stream X."""
    X = kernels._row_span(ctx.X)  # the rows over their padded stride, as the kernels read X
    out = np.zeros(kernels.NPART, np.float32)
    v = np.ones(ctx.X.shape[1], np.float32)

    def probe(window: int, rounds: int) -> Callable[[], int]:
        def job() -> None:
            numba.set_num_threads(kernels.threads_in_use("probe"))  # all, or --threads
            _probe(X, ctx.X.shape[1], window, rounds, kernels.NPART, out)

        def run() -> int:
            kernels._KERNEL_THREAD.call(job)  # where the engine's parallel calls run
            return 1

        return run

    def sgemv() -> int:
        ctx.X @ v
        return 1

    fns = [probe(X.shape[0], PROBE_FMAS // 4), probe(X.shape[0], 0),
           probe(PROBE_WINDOW, PROBE_FMAS // 4), sgemv]
    for fn in fns:
        fn()
    t_both, t_stream, t_arith, t_sgemv = (1e3 / r for r in ctx.timed(fns))
    # Each round's overlap from its own runs (close in time), then the median.
    rounds_overlap = statistics.median(
        overlap(1e3 / s, 1e3 / a, 1e3 / b) for b, s, a, _ in zip(*ctx.rates, strict=True))
    return [(f"gd-shaped probe N={N_ROWS}", f"{t_both:.1f} ms/pass", "", "",
             f"{ctx.pair_ratio(3, 0):.2f}x the time to stream X once ({t_sgemv:.1f} ms "
             f"sgemv); alone: its streaming {t_stream:.1f} ms, its {PROBE_FMAS} FMA/line "
             f"{t_arith:.1f} ms (rows in L2), overlapped {rounds_overlap:.0%}")]


def section_random(ctx: Context) -> list[Row]:
    X, y = ctx.X, ctx.y
    B = 256
    params = optim.StepParams(loss_kind=kernels.SVM, batch_size=B)
    rng_e = np.random.default_rng(1)
    rng_r = np.random.default_rng(2)
    W_e, W_r = ctx.W.copy(), ctx.W.copy()

    def run_engine(n):
        optim.run_steps("random", X, y, W_e, rng_e, params, n, np.empty(n), np.empty(n))

    n = _calibrate(run_engine)
    out_d, out_r = np.empty(n), np.empty(n)

    def engine():
        optim.run_steps("random", X, y, W_e, rng_e, params, n, out_d, out_r)
        return n

    def ref():
        idx = rng_r.integers(0, N_ROWS, (n, B))
        _reference_random_search(X, y, W_r, idx, rng_r, params.init_scale)
        return n

    engine()
    eng, refr = ctx.timed([engine, ref])
    return [(f"random search B={B}", f"{_fmt(eng)} proposals/s", f"{_fmt(refr)} proposals/s",
             f"{ctx.ratio:.2f}x", "2 loss evaluations per proposal, incl. drawing W")]


_COMPILE_SNIPPET = "import engine.kernels as k; print(k.warmup())"


def _compile_time(cache_dir: str) -> tuple[float, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET], env=env, check=True,
                         capture_output=True, text=True, cwd=_project_root())
    total = time.perf_counter() - start
    return float(out.stdout.strip().splitlines()[-1]), total


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def section_compile(ctx: Context) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="descent-numba-") as cache:
        cold, cold_total = _compile_time(cache)
        warm, warm_total = _compile_time(cache)
    return [("numba compile, cold cache", f"{cold:.1f} s", "", "",
             f"warmup() in a fresh process with an empty cache ({cold_total:.1f} s in all)"),
            ("numba compile, warm cache", f"{warm:.2f} s", "", "",
             f"warmup() loading from the cache ({warm_total:.1f} s incl. Python start)")]


BUILTIN = [("minibatch SGD", section_sgd), ("full-batch gradient descent", section_gd),
           ("a gd-shaped probe: streaming and FMAs only", section_probe),
           ("random search", section_random), ("compile", section_compile)]
"""The built-in sections, in print order."""


# ----------------------------------------------------------------------------------- main
def _print_table(title_line: str, sections: list[tuple[str, list[Row]]]) -> None:
    header: Row = ("workload", "engine", "reference", "ratio", "note")
    all_rows = [header] + [r for _, rows in sections for r in rows]
    widths = [max(len(r[k]) for r in all_rows) for k in range(4)]

    def fmt(r: Row) -> str:
        return (f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  "
                f"{r[3]:>{widths[3]}}  {r[4]}").rstrip()

    print(title_line)
    print(fmt(header))
    print("-" * (sum(widths) + 8 + 30))
    for title, rows in sections:
        print(f"[{title}]")
        for r in rows:
            print(fmt(r))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table; returns the exit status (0)."""
    parser = argparse.ArgumentParser(prog="descent bench", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs per number")
    parser.add_argument("--threads", type=int, default=None,
                        help="kernel threads (default: automatic, see kernels.set_threads)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the cold/warm compile measurement (two subprocesses)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        print("descent bench: --repeats and --threads must be at least 1", file=sys.stderr)
        return 2
    kernels.set_threads(args.threads)

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    print("descent bench: generating data, compiling kernels ...", file=sys.stderr)
    X = aligned_rows(N_ROWS, DIMS)  # laid out as the datasets are (rows on cache lines)
    for a in range(0, N_ROWS, 4096):
        X[a:a + 4096] = rng.standard_normal((min(4096, N_ROWS - a), DIMS), dtype=np.float32)
    X *= np.float32(60.0)
    X[:, -1] = 1.0
    y = rng.integers(0, CLASSES, N_ROWS).astype(np.int32)
    W = optim.init_weights(rng, DIMS, CLASSES, 1e-4)
    kernels.warmup()
    ctx = Context(X=X, y=y, W=W, rng=rng, repeats=args.repeats)
    ctx.peak_gflops = _sgemm_peak(args.repeats)

    sections = []
    for title, fn in BUILTIN + _EXTRA:
        if args.no_compile and fn is section_compile:
            continue
        print(f"descent bench: {title} ...", file=sys.stderr)
        sections.append((title, fn(ctx)))
    title_line = (f"descent bench | {machine_line()}\n"
                  f"data: random float32 X {N_ROWS}x{DIMS}, {CLASSES} classes; sgemm peak "
                  f"{ctx.peak_gflops:.0f} GFLOP/s (measured); median of {ctx.repeats}, "
                  f"interleaved; {time.perf_counter() - t0:.0f} s")
    _print_table(title_line, sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
