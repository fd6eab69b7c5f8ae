"""Fused Numba kernels: SVM and softmax loss, gradient and SGD update of a linear classifier.

Shapes: X (N, D) float32 rows (D dims incl. the bias column), y (N,) int32 labels in
0..C-1, W (D, C) float32, batch row indices int64. Loss kinds: ``SVM = 0``, ``SOFTMAX = 1``.

How a step runs (``sgd_steps``, ``gd_steps``, ``loss_and_grad``; random and local search,
``search_steps``, run a chunk of proposals in one call: each proposal scores the current W
and its candidate in one pass over its rows and keeps the better, and W stays transposed
between proposals):

- During a call W lives transposed and padded as ``Wt`` (C rows of ``DP`` floats, DP = D
  rounded up to 16 plus 16 more, so rows of W and of the gradient do not alias at 4 KiB).
  It is copied back to W at the end of the call; the copy is exact, so splitting a run into
  calls changes nothing.
- Work is divided into ``NPART`` fixed parts, each with its own gradient accumulator; the
  partition depends only on B, D and NPART, never on the number of threads that run it
  (``numba.set_num_threads(1)`` gives the same bits).
- The arithmetic is two block kernels written with explicit SIMD vectors
  (engine/simd.py; 16 float32 lanes: one zmm register where the host has AVX-512, two ymm
  halves elsewhere, with the same bits):
  :func:`_scores_block` scores up to BLOCK_ROWS (8) rows over tiles of DIM_TILE (256)
  dims, 4 rows x 5 classes per pass, so the tile of W stays in L1 while the block's rows
  pass over it; :func:`_accum_block` adds ``xᵀg`` the same way, the accumulator's tile in
  L1. Untiled 256-bit loops waited on L2 for W and the gradient (123 KB each for CIFAR)
  and peaked near 58 GFLOP/s per core; these reach 95-110 in cache on this Xeon.
- Batches of fewer than ``SPLIT_ROWS_FROM`` (128) rows are split by dims (:func:`_steps`):
  part p owns a slice of the D dims of W, of its gradient and of every row. Each part
  computes the partial scores of the batch's rows over its slice;
  after a barrier, each takes its share of the rows, sums the partial scores in part order
  and computes the loss terms and gradient coefficients g (C values per row, already
  divided by B); after another barrier, each adds ``xᵀg`` over its slice to its
  accumulator (the rows still in L2) and updates its own slice of W. W and its gradient
  never move between cores; only
  rows x C partial scores and coefficients do. The whole call is one parallel region: a
  team of threads (a member runs parts m, m + team, ...) meets at spin barriers built on
  LLVM atomics (engine/atomics.py). Moving W (123 KB for CIFAR) between the two cores'
  caches and starting two parallel regions every step cost about 45 µs, more than the
  arithmetic of a 32-row step.
- Larger batches and full-batch GD are split by rows (:func:`_steps_rows`): each part reads
  each of its rows from memory once, a block of 8 rows at a time: the block's scores,
  each row's loss term and coefficients, then ``acc += xᵀg`` for the block's rows with a
  nonzero g while they are still in L2. A second parallel pass sums the
  NPART accumulators in fixed order, adds ``2·reg·W`` and applies ``W -= lr · dW`` over
  fixed slices of W. Here the exchange of W is small next to the rows' traffic, and every
  row is read from DRAM by one core only (with the block kernels the dim split measured
  5-30% slower from 128 rows up, 27-38% faster below).
- No ``X[idx]`` copy is made and an SVM row with every margin met costs no gradient pass.
  Software prefetch: every inner iteration of the 4-row passes prefetches one 64-byte
  line of the next block's rows into L2 (``prefetcht1``), at the dims it is working on,
  so the scores sweep covers the next block's first 4 rows and the gradient sweep the
  other 4; a pass's last block prefetches the next step's first rows (:func:`_next_rows`).
  DRAM then stays busy while a block's gradient is added, when the hardware prefetchers,
  which follow each row only within its 4 KiB pages, had nothing left to fetch. Measured
  in-process (rotating order, a pause before each run; A/A pairs 0.93-1.09x), it made GD
  and SGD at B=32, 128 and 256 1.06x as fast (median over 14 comparisons, 0.98-1.13x).
  Earlier A/B runs had found such prefetches 2-40% slower; the script behind the latest
  of them ran the new kernel right after numpy's sgemv in every round, whose OpenBLAS
  threads busy-wait for about 0.1 s (a GD step right after an sgemv took 126 ms, after a
  pause 66 ms); the older ones were not re-run. Interleaving one block's
  scores with the previous block's gradient, tile by tile, or scoring block k+1 before
  adding block k's gradient, were no faster measured that fair way (0.87-1.03x).
  In the dims split, one barrier a step instead of two (each member computing
  every row's coefficients itself, the partial scores double-buffered) gave the same bits
  and was no faster (0.88-1.07x). W, the accumulators and the scratch start on cache
  lines (a 64-byte vector that straddles two lines costs two loads). Results are
  bit-for-bit deterministic (same inputs, same machine), independent of thread scheduling
  and of how many steps one call runs.

Precision: data and weights are float32. Scores are accumulated in float32 (LANES partial
sums per row and class, added up in a fixed tree order at the end; per slice of dims in the
dims split, the slices' sums added in float64) and converted to float64 for the loss: loss
terms, softmax probabilities, the batch loss and ``reg·ΣW²`` are float64. Gradient
coefficients, gradient accumulators and the update ``W -= lr·(dW + 2·reg·W)`` are float32.
Against the float64 reference (engine/reference.py) loss and gradient agree to about 1e-6
relative.

NaN and inf anywhere (W or X) never crash or hang a kernel: they flow into the losses
(reported NaN/inf) and the weights. A label outside 0..C-1 makes that row's loss NaN (and it
contributes no gradient) rather than reading outside W.

Threads: kernels are ``parallel=True`` and release the GIL. The threading layer is chosen at
import: 'threadsafe' (TBB or OpenMP) when one is available, otherwise Numba's 'workqueue'
layer. ``THREADING_LAYER`` says which. Every parallel call, from whichever
Python thread, runs on one long-lived kernel thread (see :class:`_KernelThread`): GNU
OpenMP keeps a separate team for each thread that starts parallel work, and as soon as
two teams exist it counts more threads than cores and stops spinning at barriers, so every
step then pays two futex wake-ups (measured: the dashboard's training ran at 0.7x of
headless until this). The thread count is automatic (whichever of 1 thread or all threads
the recent calls measured faster, see :func:`set_threads`) and never changes the results.
Should a threading layer not run the team's members on threads of their own, the first
member gives up waiting for the others after a bounded number of sleeps and runs the call
alone, with the same results (the call is then slow, and the thread chooser learns it).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from engine.atomics import (
    compare_exchange,
    fetch_add,
    load_acquire,
    pause,
    sleep_us,
    store_release,
)
from engine.simd import LANES, WIDE, vfma, vload, vprefetch, vsplat, vstore, vsum

SVM = 0
"""Loss kind of the multiclass SVM (hinge, delta = 1)."""
SOFTMAX = 1
"""Loss kind of softmax / cross-entropy."""
LOSS_KINDS = {"svm": SVM, "softmax": SOFTMAX}
"""Loss kind by name."""

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
"""LLVM fast-math flags of every kernel: reassociation lets loops vectorize; no ``nnan`` /
``ninf``, so NaN and inf checks stay meaningful."""

NPART = max(1, min(os.cpu_count() or 1, 16))
"""Parts a batch is split into (one gradient accumulator each): the machine's core count,
not the thread setting, so results on a machine never depend on NUMBA_NUM_THREADS or
``numba.set_num_threads`` (fewer threads simply run several parts each)."""


def _pick_threading_layer() -> str:
    """Prefer TBB or OpenMP to Numba's own 'workqueue' layer; return the layer's name.

    Every call comes from the one kernel thread (:class:`_KernelThread`), so even
    'workqueue', which must never be entered from two threads at once, needs no lock.
    """
    for module in ("tbbpool", "omppool"):
        try:
            __import__(f"numba.np.ufunc.{module}")
        except Exception:  # noqa: BLE001 - any failure means "layer unavailable"
            continue
        numba.config.THREADING_LAYER = "threadsafe"
        return "tbb" if module == "tbbpool" else "omp"
    numba.config.THREADING_LAYER = "workqueue"
    return "workqueue"


THREADING_LAYER = _pick_threading_layer()
"""The threading layer requested for the kernels ('tbb', 'omp' or 'workqueue')."""


_THREADS: int | None = None

PROBE_EVERY = 16
"""Automatic threads: after this many calls of one kind of work on the current choice, one
call tries the other choice (1 thread vs all); the back-off doubles while it keeps losing,
up to PROBE_MAX calls."""
PROBE_MAX = 256
WINDOW = 5
"""The current choice's speed is the median of its last WINDOW calls: a UI frame or another
process that pre-empts one kernel thread for a few tens of milliseconds stalls the other at
the next barrier too, and makes one or two calls look several times slower."""
SWITCH_RATIO = 1.5
"""Between probes, leave the current choice when its median gets this much slower per unit
of work than the other choice's last measurement (a machine that became oversubscribed)."""
PROBE_MARGIN = 1.2
"""A probe wins (and the choice switches) only when it is this much faster than the current
choice's median."""


class _ThreadChooser:
    """Picks 1 thread or all threads for one kind of work from measured speed.

    Every step synchronises the threads, so on an oversubscribed machine a thread waiting
    for a descheduled partner loses a scheduler slice per step and 2 threads can be many
    times slower than 1. The load average reacts in minutes; this reacts in a few calls: it
    keeps a recent seconds-per-unit estimate of each choice, uses the faster one and
    re-tries the other now and then. Short disturbances (the dashboard's own frames) must
    not flip it, hence the median and the margins. Results never depend on it (see NPART).
    """

    def __init__(self) -> None:
        self.rate: dict[int, float] = {}  # threads -> recent seconds per unit of work
        self.recent: list[float] = []  # the current choice's last WINDOW calls
        self.current = 0  # threads of the current choice (0: not chosen yet)
        self.since_probe = 0  # calls on the current choice since the last probe
        self.backoff = PROBE_EVERY  # calls between probes

    def pick(self, limit: int) -> int:
        """Threads for the next call (limit: the most threads available)."""
        if limit <= 1:
            return 1
        if self.current not in (1, limit):
            self._switch(limit)
            self.rate.clear()
        other = 1 if self.current == limit else limit
        if other not in self.rate or self.since_probe >= self.backoff:
            return other  # the very first call measures the other choice (1 thread)
        return self.current

    def record(self, threads: int, seconds: float, units: float) -> None:
        """Report a call's wall time for `units` of work (e.g. rows) run on `threads`."""
        per_unit = seconds / max(units, 1.0)
        if threads != self.current:  # a probe of the other choice
            self.rate[threads] = per_unit
            self.since_probe = 0
            cur = self.rate.get(self.current)
            if cur is None:  # nothing to compare with yet: keep the default (all threads)
                return
            if per_unit * PROBE_MARGIN < cur:
                self._switch(threads, per_unit)
            else:
                self.backoff = min(PROBE_MAX, 2 * self.backoff)
            return
        self.recent = [*self.recent[-(WINDOW - 1):], per_unit]
        self.since_probe += 1
        cur = self.rate[threads] = float(np.median(self.recent))
        other = next((t for t in self.rate if t != threads), None)
        if (other is not None and len(self.recent) == WINDOW
                and self.rate[other] * SWITCH_RATIO < cur):
            self._switch(other)

    def _switch(self, threads: int, first: float | None = None) -> None:
        self.current = threads
        self.recent = [] if first is None else [first]
        self.backoff = PROBE_EVERY
        self.since_probe = 0


_CHOOSERS: dict[tuple[str, int, int], _ThreadChooser] = {}
"""Choosers by (kind of work, bit length of rows per step, bit length of rows per call): a
short call pays the threads' wake-up, a long one mostly their per-step synchronisation."""


def set_threads(n: int | None) -> None:
    """Threads the kernels use: n >= 1 fixes it; None (default) chooses automatically.

    Automatic: for each kind of work (kernel, batch size and call size classes) the kernels
    time their calls and use whichever of 1 thread or all NUMBA_NUM_THREADS threads is
    currently faster, trying the other now and then (see :class:`_ThreadChooser`); on a
    quiet machine that is all threads for steps, on an oversubscribed one usually 1. The
    thread count never changes the results (see NPART).
    """
    global _THREADS
    if n is not None and n < 1:
        raise ValueError("kernels: thread count must be at least 1")
    _THREADS = n


def threads_in_use(kind: str = "steps", rows: int = 256, units: int = 256 * 64) -> int:
    """Threads the next call of this kind (rows per step, rows per call) will use."""
    limit = numba.config.NUMBA_NUM_THREADS
    if _THREADS is not None:
        return max(1, min(_THREADS, limit))
    chooser = _CHOOSERS.get((kind, int(rows).bit_length(), int(units).bit_length()))
    if chooser is None:
        return limit
    return chooser.current or limit


class _KernelThread:
    """The one thread on which every parallel kernel runs.

    A caller on another thread queues the call and waits (its GIL released); the result or
    the exception comes back to it. A signal (Ctrl-C) that arrives while it waits is raised
    once the call has returned, exactly as if the kernel had run on the caller's thread, so
    W is never left half-updated by a kernel still running behind an exception.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the kernel thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="descent-kernels",
                                                daemon=True)
                self._thread.start()
        box: list[Any] = [None, None]
        done = threading.Event()
        self._jobs.put((fn, box, done))
        pending: BaseException | None = None
        while not done.is_set():
            try:
                done.wait()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the call
                pending = pending or e
        if pending is not None:
            raise pending
        if box[1] is not None:
            raise box[1]
        return box[0]

    def _loop(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box[0] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box[1] = e
            finally:
                done.set()
                del fn, box, done


_KERNEL_THREAD = _KernelThread()


_TEAM = object()
"""Stands, in :func:`_parallel`'s args, for the number of threads the call runs on."""


def _parallel(kind: str, rows: int, units: float, kernel: Callable[..., Any],
              *args: Any) -> Any:
    """Run a parallel kernel on the kernel thread with the thread count fixed, or chosen
    and timed for `units` of work when automatic; an arg that is ``_TEAM`` is replaced by
    that thread count."""

    def job() -> Any:
        limit = numba.config.NUMBA_NUM_THREADS
        chooser = None
        if _THREADS is not None:
            threads = max(1, min(_THREADS, limit))
        else:
            key = (kind, int(rows).bit_length(), int(units).bit_length())
            chooser = _CHOOSERS.setdefault(key, _ThreadChooser())
            threads = chooser.pick(limit)
        numba.set_num_threads(threads)  # per thread in Numba: set it here, on this thread
        start = time.perf_counter()
        result = kernel(*(threads if a is _TEAM else a for a in args))
        seconds = time.perf_counter() - start
        if chooser is not None:
            chooser.record(threads, seconds, units)
        return result

    return _KERNEL_THREAD.call(job)


def build() -> str:
    """What the kernels' exact bits may depend on besides their inputs: the sources compiled
    into them and the CPU LLVM compiles for, e.g. ``"src-7d2c9155c58bc3e5 emeraldrapids"``.
    The vector width is 16 floats on every CPU (engine/simd.py), so CPUs with and without
    AVX-512 give the same bits (tested); the CPU is named in case another one does not.
    Recordings keep it in their header, so verify can tell a real difference from a
    recording made by another build."""
    import llvmlite.binding as llvm

    from engine import SOURCES_DIGEST

    cpu = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    return f"src-{SOURCES_DIGEST} {cpu}"


def padded_dim(D: int) -> int:
    """Leading dimension of the transposed weight and gradient buffers for D dims."""
    return ((D + 15) // 16) * 16 + 16


def _row_span(X: np.ndarray) -> np.ndarray:
    """X (N, D) with contiguous rows as the C-contiguous (N, row stride) array the compiled
    kernels index (X[i] is row i); they read only its first D columns, so the padding past
    D, which need not belong to X's buffer after the last row, is never touched. The
    datasets' rows start on cache lines this way (``engine.data.aligned_rows``)."""
    if X.flags.c_contiguous:
        return X
    return np.lib.stride_tricks.as_strided(X, (X.shape[0], X.strides[0] // 4),
                                           (X.strides[0], 4))


_JIT = dict(cache=True, nogil=True, fastmath=FASTMATH)
_PJIT = dict(cache=True, nogil=True, fastmath=FASTMATH, parallel=True)


# ----------------------------------------------------------------------------- row helpers
@njit(**_JIT)
def _aligned_f32(n):
    """An uninitialised float32 array of n elements starting on a 64-byte cache line.

    The block kernels' vectors are a cache line wide (AVX-512): a vector that straddles
    two lines costs two loads, so W, the accumulators and the scratch are line-aligned
    (DP is a multiple of 16 floats, so every row of them starts on a line too)."""
    buf = np.empty(n + 16, dtype=np.float32)
    off = ((64 - buf.ctypes.data % 64) % 64) // 4
    return buf[off:off + n]


# The arithmetic of every pass is two block kernels written with explicit SIMD vectors
# (engine/simd.py: LANES = 16 floats, one zmm register on AVX-512 hosts, two ymm elsewhere,
# where WIDE is False and the kernels take one row at a time: same sums, same bits):
#   scores: a block of up to BLOCK_ROWS rows is scored over tiles of DIM_TILE dims, so the
#     tile of W (C x 256 floats, 10 KiB for CIFAR) stays in L1 while every row of the block
#     passes over it; 4 rows x 5 classes per pass over a tile (20 vector accumulators, each
#     x load feeding 5 FMAs and each W load 4). A (row, class) pair's LANES partial sums
#     live in the block's scratch P between tiles and are summed once, at the end.
#   gradient: ``acc += xᵀg`` tile by tile, the accumulator's tile (10 KiB) in L1 while the
#     rows pass; 4 rows x 5 classes per pass, each accumulator vector updated by 4 FMAs.
#     Holding 4 vectors x 5 classes of the accumulator in registers across all the block's
#     rows instead (a GEMM micro-kernel's shape; same bits) measured 0.83-0.93x of this.
# Untiled, W (123 KB) and the accumulator did not fit in L1 and every 20 FMAs waited on
# 9 loads from L2; that capped the old 256-bit kernels at about 58 GFLOP/s per core, and
# 512-bit vectors alone did not help. Dims past the last whole vector (D = 3073: one dim)
# run as scalars. Each part's slice [dlo, dhi) starts on a whole vector (see _dedge).
BLOCK_ROWS = 8
"""Rows per block of the row pass: their partial sums (BLOCK_ROWS x C x LANES floats, 5 KiB
for 10 classes) and a W tile fit in L1 together; their rows (96 KiB) stay in L1/L2 from the
scores to the gradient. Measured in-process against 4, 16 and 32 rows: 8 was 5-13% faster
than 4 and 0-8% faster than 16, which beat 32 by 2-8% (GD, B=256, B=1024). The block size
never changes the results: a row's scores are its own, and rows reach each gradient sum in
the same order whatever the blocks."""
DIM_TILE = 256
"""Dims per tile of the scores and gradient kernels (a multiple of LANES)."""


@njit(**_JIT)
def _scores_block(X, rows, r0, nb, Wt, DP, dlo, dhi, C, P, S, o, NX):
    """Scores of rows[r0:r0+nb] over dims [dlo, dhi) into S[o:o+nb, :C] (float64).

    P: float32 scratch of at least nb*C*LANES, on a cache line. NX: the rows to prefetch
    into L2 meanwhile (the next block's; not empty): each inner iteration of a 4-row pass
    prefetches the line of one of them at the dims it is scoring, a row per pass of 4 rows
    x 5 classes, so an 8-row block's passes over the tiles cover NX[0:2*C/5] over
    [dlo, dhi): the first 4 rows for 10 classes (the gradient takes the next 4), all 8 for
    the 20 of random search's two W's.
    """
    dv = dhi - (dhi - dlo) % LANES
    for k in range(nb * C * LANES):
        P[k] = 0.0
    c5 = C - C % 5
    L = LANES
    for t0 in range(dlo, dv, DIM_TILE):
        t1 = min(t0 + DIM_TILE, dv)
        k = 0
        while k < nb:
            if nb - k < 4 or not WIDE:  # 4 rows x 5 classes need 29 vector registers
                _scores_row(X[rows[r0 + k]], Wt, DP, t0, t1, C, P, k * C * L)
                k += 1
                continue
            x0 = X[rows[r0 + k]]
            x1 = X[rows[r0 + k + 1]]
            x2 = X[rows[r0 + k + 2]]
            x3 = X[rows[r0 + k + 3]]
            for c in range(0, c5, 5):
                xp = X[NX[((k // 4) * (c5 // 5) + c // 5) % NX.shape[0]]]
                p0 = (k * C + c) * L
                p1 = p0 + C * L
                p2 = p1 + C * L
                p3 = p2 + C * L
                a00 = vload(P, p0)
                a01 = vload(P, p0 + L)
                a02 = vload(P, p0 + 2 * L)
                a03 = vload(P, p0 + 3 * L)
                a04 = vload(P, p0 + 4 * L)
                a10 = vload(P, p1)
                a11 = vload(P, p1 + L)
                a12 = vload(P, p1 + 2 * L)
                a13 = vload(P, p1 + 3 * L)
                a14 = vload(P, p1 + 4 * L)
                a20 = vload(P, p2)
                a21 = vload(P, p2 + L)
                a22 = vload(P, p2 + 2 * L)
                a23 = vload(P, p2 + 3 * L)
                a24 = vload(P, p2 + 4 * L)
                a30 = vload(P, p3)
                a31 = vload(P, p3 + L)
                a32 = vload(P, p3 + 2 * L)
                a33 = vload(P, p3 + 3 * L)
                a34 = vload(P, p3 + 4 * L)
                w0 = c * DP
                w1 = w0 + DP
                w2 = w1 + DP
                w3 = w2 + DP
                w4 = w3 + DP
                for d in range(t0, t1, L):
                    vprefetch(xp, d)
                    e0 = vload(x0, d)
                    e1 = vload(x1, d)
                    e2 = vload(x2, d)
                    e3 = vload(x3, d)
                    q0 = vload(Wt, w0 + d)
                    q1 = vload(Wt, w1 + d)
                    q2 = vload(Wt, w2 + d)
                    q3 = vload(Wt, w3 + d)
                    q4 = vload(Wt, w4 + d)
                    a00 = vfma(e0, q0, a00)
                    a01 = vfma(e0, q1, a01)
                    a02 = vfma(e0, q2, a02)
                    a03 = vfma(e0, q3, a03)
                    a04 = vfma(e0, q4, a04)
                    a10 = vfma(e1, q0, a10)
                    a11 = vfma(e1, q1, a11)
                    a12 = vfma(e1, q2, a12)
                    a13 = vfma(e1, q3, a13)
                    a14 = vfma(e1, q4, a14)
                    a20 = vfma(e2, q0, a20)
                    a21 = vfma(e2, q1, a21)
                    a22 = vfma(e2, q2, a22)
                    a23 = vfma(e2, q3, a23)
                    a24 = vfma(e2, q4, a24)
                    a30 = vfma(e3, q0, a30)
                    a31 = vfma(e3, q1, a31)
                    a32 = vfma(e3, q2, a32)
                    a33 = vfma(e3, q3, a33)
                    a34 = vfma(e3, q4, a34)
                vstore(P, p0, a00)
                vstore(P, p0 + L, a01)
                vstore(P, p0 + 2 * L, a02)
                vstore(P, p0 + 3 * L, a03)
                vstore(P, p0 + 4 * L, a04)
                vstore(P, p1, a10)
                vstore(P, p1 + L, a11)
                vstore(P, p1 + 2 * L, a12)
                vstore(P, p1 + 3 * L, a13)
                vstore(P, p1 + 4 * L, a14)
                vstore(P, p2, a20)
                vstore(P, p2 + L, a21)
                vstore(P, p2 + 2 * L, a22)
                vstore(P, p2 + 3 * L, a23)
                vstore(P, p2 + 4 * L, a24)
                vstore(P, p3, a30)
                vstore(P, p3 + L, a31)
                vstore(P, p3 + 2 * L, a32)
                vstore(P, p3 + 3 * L, a33)
                vstore(P, p3 + 4 * L, a34)
            for c in range(c5, C):
                p0 = (k * C + c) * L
                a00 = vload(P, p0)
                a10 = vload(P, p0 + C * L)
                a20 = vload(P, p0 + 2 * C * L)
                a30 = vload(P, p0 + 3 * C * L)
                w0 = c * DP
                for d in range(t0, t1, L):
                    q0 = vload(Wt, w0 + d)
                    a00 = vfma(vload(x0, d), q0, a00)
                    a10 = vfma(vload(x1, d), q0, a10)
                    a20 = vfma(vload(x2, d), q0, a20)
                    a30 = vfma(vload(x3, d), q0, a30)
                vstore(P, p0, a00)
                vstore(P, p0 + C * L, a10)
                vstore(P, p0 + 2 * C * L, a20)
                vstore(P, p0 + 3 * C * L, a30)
            k += 4
    for k in range(nb):
        x = X[rows[r0 + k]]
        for c in range(C):
            tail = np.float32(0.0)
            for d in range(dv, dhi):
                tail += x[d] * Wt[c * DP + d]
            S[o + k, c] = np.float64(vsum(vload(P, (k * C + c) * L)) + tail)


@njit(**_JIT)
def _scores_row(x, Wt, DP, t0, t1, C, P, p):
    """One row's partial sums over the tile [t0, t1) into P[p:p + C*LANES]: 5 classes
    (5 independent FMA chains) per pass."""
    L = LANES
    c5 = C - C % 5
    for c in range(0, c5, 5):
        q = p + c * L
        a0 = vload(P, q)
        a1 = vload(P, q + L)
        a2 = vload(P, q + 2 * L)
        a3 = vload(P, q + 3 * L)
        a4 = vload(P, q + 4 * L)
        w0 = c * DP
        for d in range(t0, t1, L):
            e = vload(x, d)
            a0 = vfma(e, vload(Wt, w0 + d), a0)
            a1 = vfma(e, vload(Wt, w0 + DP + d), a1)
            a2 = vfma(e, vload(Wt, w0 + 2 * DP + d), a2)
            a3 = vfma(e, vload(Wt, w0 + 3 * DP + d), a3)
            a4 = vfma(e, vload(Wt, w0 + 4 * DP + d), a4)
        vstore(P, q, a0)
        vstore(P, q + L, a1)
        vstore(P, q + 2 * L, a2)
        vstore(P, q + 3 * L, a3)
        vstore(P, q + 4 * L, a4)
    for c in range(c5, C):
        q = p + c * L
        a0 = vload(P, q)
        for d in range(t0, t1, L):
            a0 = vfma(vload(x, d), vload(Wt, c * DP + d), a0)
        vstore(P, q, a0)


@njit(**_JIT)
def _accum_block(X, brow, nb, G, acc, DP, dlo, dhi, C, NX):
    """acc[c, dlo:dhi] += sum over k < nb of G[k, c] * X[brow[k], dlo:dhi] (acc flat (C, DP)),
    prefetching rows NX[2*C/5:4*C/5] (modulo its length; NX[4:8] for 10 classes) as
    :func:`_scores_block` does the first ones.

    Rows are added in order k = 0, 1, ... to each element (one rounding per FMA), so the
    result depends on the rows' order only, not on tiles or threads."""
    dv = dhi - (dhi - dlo) % LANES
    c5 = C - C % 5
    L = LANES
    for t0 in range(dlo, dv, DIM_TILE):
        t1 = min(t0 + DIM_TILE, dv)
        k = 0
        while k < nb:
            if nb - k < 4 or not WIDE:  # one row at a time: the same FMAs in the same order
                x0 = X[brow[k]]
                for c in range(C):
                    g0 = vsplat(G[k, c])
                    w0 = c * DP
                    for d in range(t0, t1, L):
                        vstore(acc, w0 + d, vfma(g0, vload(x0, d), vload(acc, w0 + d)))
                k += 1
                continue
            x0 = X[brow[k]]
            x1 = X[brow[k + 1]]
            x2 = X[brow[k + 2]]
            x3 = X[brow[k + 3]]
            for c in range(0, c5, 5):
                xp = X[NX[((k // 4 + 2) * (c5 // 5) + c // 5) % NX.shape[0]]]
                g00 = vsplat(G[k, c])
                g01 = vsplat(G[k + 1, c])
                g02 = vsplat(G[k + 2, c])
                g03 = vsplat(G[k + 3, c])
                g10 = vsplat(G[k, c + 1])
                g11 = vsplat(G[k + 1, c + 1])
                g12 = vsplat(G[k + 2, c + 1])
                g13 = vsplat(G[k + 3, c + 1])
                g20 = vsplat(G[k, c + 2])
                g21 = vsplat(G[k + 1, c + 2])
                g22 = vsplat(G[k + 2, c + 2])
                g23 = vsplat(G[k + 3, c + 2])
                g30 = vsplat(G[k, c + 3])
                g31 = vsplat(G[k + 1, c + 3])
                g32 = vsplat(G[k + 2, c + 3])
                g33 = vsplat(G[k + 3, c + 3])
                g40 = vsplat(G[k, c + 4])
                g41 = vsplat(G[k + 1, c + 4])
                g42 = vsplat(G[k + 2, c + 4])
                g43 = vsplat(G[k + 3, c + 4])
                w0 = c * DP
                w1 = w0 + DP
                w2 = w1 + DP
                w3 = w2 + DP
                w4 = w3 + DP
                for d in range(t0, t1, L):
                    vprefetch(xp, d)
                    e0 = vload(x0, d)
                    e1 = vload(x1, d)
                    e2 = vload(x2, d)
                    e3 = vload(x3, d)
                    vstore(acc, w0 + d, vfma(g03, e3, vfma(g02, e2, vfma(
                        g01, e1, vfma(g00, e0, vload(acc, w0 + d))))))
                    vstore(acc, w1 + d, vfma(g13, e3, vfma(g12, e2, vfma(
                        g11, e1, vfma(g10, e0, vload(acc, w1 + d))))))
                    vstore(acc, w2 + d, vfma(g23, e3, vfma(g22, e2, vfma(
                        g21, e1, vfma(g20, e0, vload(acc, w2 + d))))))
                    vstore(acc, w3 + d, vfma(g33, e3, vfma(g32, e2, vfma(
                        g31, e1, vfma(g30, e0, vload(acc, w3 + d))))))
                    vstore(acc, w4 + d, vfma(g43, e3, vfma(g42, e2, vfma(
                        g41, e1, vfma(g40, e0, vload(acc, w4 + d))))))
            for c in range(c5, C):
                g00 = vsplat(G[k, c])
                g01 = vsplat(G[k + 1, c])
                g02 = vsplat(G[k + 2, c])
                g03 = vsplat(G[k + 3, c])
                w0 = c * DP
                for d in range(t0, t1, L):
                    vstore(acc, w0 + d, vfma(g03, vload(x3, d), vfma(g02, vload(x2, d), vfma(
                        g01, vload(x1, d), vfma(g00, vload(x0, d), vload(acc, w0 + d))))))
            k += 4
    for k in range(nb):
        x = X[brow[k]]
        for c in range(C):
            g = G[k, c]
            for d in range(dv, dhi):
                acc[c * DP + d] += g * x[d]


@njit(**_JIT)
def _row_loss(s, yi, C, loss_kind, scale, g, want_grad):
    """Loss of one row from its scores s (C,) float64; coefficients dL/ds * scale into g.

    Returns the row's data loss (float64). An invalid label gives NaN and g = 0.
    """
    if yi < 0 or yi >= C:
        for c in range(C):
            g[c] = 0.0
        return np.nan
    if loss_kind == SVM:
        sy = s[yi]
        loss = 0.0
        count = 0
        for c in range(C):
            g[c] = 0.0
            if c == yi:
                continue
            margin = s[c] - sy + 1.0
            if margin > 0.0:
                loss += margin
                count += 1
                g[c] = scale
            elif margin != margin:
                loss += margin  # NaN propagates into the loss
        g[yi] = -count * scale
        return loss
    m = s[0]
    for c in range(1, C):
        if s[c] > m:
            m = s[c]
    total = 0.0
    for c in range(C):
        e = np.exp(s[c] - m)
        g[c] = e  # each exp once: they are most of a softmax row's cost
        total += e
    loss = np.log(total) - (s[yi] - m)
    if want_grad:
        for c in range(C):
            p = g[c] / total
            if c == yi:
                p -= 1.0
            g[c] = p * scale
    return loss


@njit(**_JIT)
def _argmax(s, C):
    best = 0
    for c in range(1, C):
        if s[c] > s[best]:
            best = c
    return best


@njit(**_JIT)
def _bounds(n, parts, p):
    """Fixed contiguous partition of n items into parts; returns part p's [lo, hi)."""
    return (n * p) // parts, (n * (p + 1)) // parts


# ------------------------------------------------- the phases of a step split by dims (B < 128)
# Part p owns the slice [_dedge(p), _dedge(p+1)) of the D dims of W, of its gradient and of
# every row. Per step:
#   scores (each part: partial scores of the batch's rows over its slice) | barrier |
#   loss (each part: its share of the rows; scores = sum of the partials in part order,
#         loss term and coefficients G) | barrier |
#   gradient (each part: acc[slice] += xᵀG over its slice, rows still in cache), then the
#   update of its own slice. W and the gradient never leave the core that owns them; what
#   crosses between cores is the partial scores (B x C float64) and G (B x C float32).
# The batch is small (B < SPLIT_ROWS_FROM), so a part's slice of its rows stays in L2 from
# the scores to the gradient.
@njit(**_JIT)
def _dedge(D, nparts, p):
    """First dim of part p's slice (D for p = nparts); slices start on 16-float (64-byte)
    boundaries of W's rows, so no two parts write the same cache line of W."""
    if p >= nparts:
        return D
    return ((D * p) // nparts) // 16 * 16


@njit(**_JIT)
def _phase_scores(X, rows, Wt, DP, dlo, dhi, C, P, S, after):
    """Partial scores over dims [dlo, dhi) of all the batch's rows into S[:B, :C], a block
    of BLOCK_ROWS rows at a time (P: the block kernel's scratch). Each block prefetches
    the next one's rows, the last block the rows `after` (see _scores_block)."""
    B = rows.shape[0]
    for b0 in range(0, B, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, B - b0)
        _scores_block(X, rows, b0, nb, Wt, DP, dlo, dhi, C, P, S, b0,
                      _next_rows(rows, b0 + BLOCK_ROWS, B, after))


@njit(**_JIT)
def _phase_loss(y, rows, PS, p, C, loss_kind, scale, G, s, g):
    """Losses of part p's share of the batch's rows; their coefficients into G[k, :C].

    A row's scores are the sum of all parts' partial scores PS[q, k] in part order.
    Returns the sum of the rows' losses."""
    nparts = PS.shape[0]
    lo, hi = _bounds(rows.shape[0], nparts, p)
    total = 0.0
    for k in range(lo, hi):
        for c in range(C):
            v = 0.0
            for q in range(nparts):
                v += PS[q, k, c]
            s[c] = v
        total += _row_loss(s, y[rows[k]], C, loss_kind, scale, g, True)
        for c in range(C):
            G[k, c] = g[c]
    return total


@njit(**_JIT)
def _phase_grad(X, rows, G, acc, DP, dlo, dhi, C, brow, GB, after):
    """acc[:, dlo:dhi] += the rows' xᵀG over [dlo, dhi), prefetching the rows `after`.

    Rows whose coefficients are all zero (an SVM row with every margin met) are left out:
    the others' indices and coefficients are packed into brow and GB first."""
    nb = _pack_rows(rows, G, C, brow, GB)
    _accum_block(X, brow, nb, GB, acc, DP, dlo, dhi, C, after)


@njit(**_JIT)
def _next_rows(rows, r, hi, after):
    """The rows a block kernel prefetches: the block from rows[r] (not past hi), else
    the first block of `after` (the next step's), else rows[hi - 1] alone (never empty)."""
    if r < hi:
        return rows[r:min(r + BLOCK_ROWS, hi)]
    if after.shape[0] > 0:
        return after[:BLOCK_ROWS]
    return rows[hi - 1:hi]


@njit(**_JIT)
def _pack_rows(rows, G, C, brow, GB):
    """Copy the rows with a nonzero coefficient (NaN counts: it must reach W) and their
    coefficients G[k] into brow[:n], GB[:n]; returns n."""
    n = 0
    for k in range(rows.shape[0]):
        nonzero = False
        for c in range(C):
            if G[k, c] != 0.0:
                nonzero = True
                break
        if nonzero:
            brow[n] = rows[k]
            for c in range(C):
                GB[n, c] = G[k, c]
            n += 1
    return n


@njit(**_JIT)
def _sumsq(w):
    """Sum of squares of w in float64."""
    total = 0.0
    for k in range(w.shape[0]):
        v = np.float64(w[k])
        total += v * v
    return total


@njit(**_JIT)
def _sgd_update(total, w, lr, two_reg):
    """w -= lr * (total + two_reg * w) in float32, then total = 0."""
    for k in range(total.shape[0]):
        w[k] = w[k] - lr * (total[k] + two_reg * w[k])
        total[k] = 0.0


@njit(**_JIT)
def _full_grad(total, w, two_reg, out):
    """out = total + two_reg * w, then total = 0."""
    for k in range(total.shape[0]):
        out[k] = total[k] + two_reg * w[k]
        total[k] = 0.0


@njit(**_JIT)
def _phase_apply(acc, Wt, DP, dlo, dhi, C, lr, two_reg, update, grad_out):
    """Over [dlo, dhi): W -= lr * (acc + 2*reg*W) (update) or grad_out = acc + 2*reg*W,
    then acc = 0. float32."""
    for c in range(C):
        a = acc[c * DP + dlo:c * DP + dhi]
        w = Wt[c * DP + dlo:c * DP + dhi]
        if update:
            _sgd_update(a, w, lr, two_reg)
        else:
            _full_grad(a, w, two_reg, grad_out[c * DP + dlo:c * DP + dhi])


# ------------------------------------------------------------------------------ the team
# One parallel region per call: `team` threads run the parts (member m runs parts m,
# m + team, ...) and meet at spin barriers between the phases, instead of starting a
# parallel region per phase. The atomics are LLVM's (engine/atomics.py).
SPINS = 2000
"""Pause-spins of a waiting thread (~100 µs) before it starts sleeping SLEEP_US at a time."""
SLEEP_US = 50
JOIN_SLEEPS = 400
"""Sleeps (~25-40 ms in all) a thread waits for the rest of the team to start before it
runs the call alone (a threading layer that ran two members on one thread would otherwise
never finish)."""
ABANDONED = 1 << 40
SPLIT_ROWS_FROM = 128
"""Batches of at least this many rows are split by rows (:func:`_steps_rows`), smaller ones
by dims (:func:`_steps`). Read by :func:`_run` at every call."""


@njit(**_JIT)
def _wait(spins):
    if spins < SPINS:
        pause()
    else:
        sleep_us(SLEEP_US)


@njit(**_JIT)
def _join(state, team):
    """Enter the team. Returns 1: run as a member; 0: do nothing (the call is run by
    another thread alone); 2: run the whole call alone (the team never formed)."""
    if fetch_add(state, 0, 1) >= ABANDONED:
        return 0
    spins = np.int64(0)
    while True:
        v = load_acquire(state, 0)
        if v >= ABANDONED:
            return 0
        if v >= team:
            return 1
        _wait(spins)
        spins += 1
        if spins > SPINS + JOIN_SLEEPS and compare_exchange(state, 0, v, ABANDONED):
            return 2


@njit(**_JIT)
def _barrier(sync, m, team, k):
    """Barrier number k of the call: member m arrives, then waits for the others."""
    store_release(sync[m], 0, k)
    for q in range(team):
        spins = np.int64(0)
        while load_acquire(sync[q], 0) < k:
            _wait(spins)
            spins += 1


@njit(**_JIT)
def _member(m, team, X, y, idx, n_steps, Wt, DP, D, C, lr, reg, loss_kind, update, acc,
            grad_out, PS, G, loss_parts, sq_parts, sync):
    """Member m of a team of `team` threads: every step, its parts' phases (see above)."""
    nparts = acc.shape[0]
    s = np.empty(C, dtype=np.float64)
    g = np.empty(C, dtype=np.float64)
    B = idx.shape[1]
    P = _aligned_f32(BLOCK_ROWS * C * LANES)
    brow = np.empty(B, dtype=np.int64)
    GB = np.empty((B, C), dtype=np.float32)
    lr32 = np.float32(lr)
    two_reg = np.float32(2.0 * reg)
    k = 0
    for step in range(n_steps):
        rows = idx[step % idx.shape[0]]
        after = idx[(step + 1) % idx.shape[0]]
        scale = 1.0 / B
        for p in range(m, nparts, team):
            dlo, dhi = _dedge(D, nparts, p), _dedge(D, nparts, p + 1)
            sq = 0.0
            for c in range(C):
                sq += _sumsq(Wt[c * DP + dlo:c * DP + dhi])
            sq_parts[step, p] = sq
            _phase_scores(X, rows, Wt, DP, dlo, dhi, C, P, PS[p], after)
        k += 1
        _barrier(sync, m, team, k)
        for p in range(m, nparts, team):
            loss_parts[step, p] = _phase_loss(y, rows, PS, p, C, loss_kind, scale, G, s, g)
        k += 1
        _barrier(sync, m, team, k)
        for p in range(m, nparts, team):
            dlo, dhi = _dedge(D, nparts, p), _dedge(D, nparts, p + 1)
            _phase_grad(X, rows, G, acc[p], DP, dlo, dhi, C, brow, GB,
                        after[BLOCK_ROWS:2 * BLOCK_ROWS] if B > BLOCK_ROWS else after)
            _phase_apply(acc[p], Wt, DP, dlo, dhi, C, lr32, two_reg, update, grad_out)


@njit(**_JIT)
def _part_pass(X, y, rows, lo, hi, Wt, DP, D, C, groups, loss_kind, scale, acc, want_grad,
               pred, losses, after):
    """Loss (and gradient into acc) of rows[lo:hi] over all D dims, for `groups` weight
    matrices at once: the row split of large batches, and the loss-only passes.

    Wt holds groups*C transposed rows (several W's scored in one pass over the rows, as
    random search does with the current W and its candidate). Row losses of group k are
    summed into losses[k]; the gradient (group 0 only) goes into acc when want_grad. The
    rows go a block of BLOCK_ROWS at a time: scores, then each row's loss and coefficients
    g, then ``acc += xᵀg`` for the block's rows with a nonzero g while they are still in
    L2 (an SVM row with every margin met costs no gradient pass). Group 0's predictions go
    into pred[lo:hi] when pred is sized. Returns group 0's number of correct predictions.
    """
    zero = np.int64(0)  # not the literal 0: one compiled version of the callees
    GC = groups * C
    P = _aligned_f32(BLOCK_ROWS * GC * LANES)
    S = np.empty((BLOCK_ROWS, GC), dtype=np.float64)
    G = np.empty((BLOCK_ROWS, C), dtype=np.float32)
    GB = np.empty((BLOCK_ROWS, C), dtype=np.float32)
    brow = np.empty(BLOCK_ROWS, dtype=np.int64)
    g = np.empty(C, dtype=np.float64)
    for k in range(groups):
        losses[k] = 0.0
    correct = 0
    keep_pred = pred.shape[0] > 0
    for r in range(lo, hi, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, hi - r)
        nx = _next_rows(rows, r + BLOCK_ROWS, hi, after)
        _scores_block(X, rows, r, nb, Wt, DP, zero, D, GC, P, S, zero, nx)
        for k in range(nb):
            i = rows[r + k]
            yi = y[i]
            for grp in range(groups):
                losses[grp] += _row_loss(S[k, grp * C:(grp + 1) * C], yi, C, loss_kind,
                                         scale, g, want_grad and grp == 0)
            best = _argmax(S[k], C)
            if best == yi:
                correct += 1
            if keep_pred:
                pred[r + k] = best
            if want_grad:
                for c in range(C):
                    G[k, c] = g[c]
        if want_grad:
            n = _pack_rows(rows[r:r + nb], G, C, brow, GB)
            if n > 0:
                _accum_block(X, brow, n, GB, acc, DP, zero, D, C, nx)
    return correct


@njit(**_JIT)
def _sgd_update2(a0, a1, w, lr, two_reg):
    """Two parts in one pass: w -= lr * ((a0 + a1) + two_reg * w), then a0 = a1 = 0."""
    for k in range(a0.shape[0]):
        w[k] = w[k] - lr * ((a0[k] + a1[k]) + two_reg * w[k])
        a0[k] = 0.0
        a1[k] = 0.0


@njit(**_JIT)
def _apply(acc, klo, khi, Wt, lr, reg, update, grad_out):
    """Row split: sum the parts' accumulators over the flat slice [klo, khi) in fixed order
    (zeroing them), add 2*reg*W, then W -= lr * grad (update) or grad_out = grad."""
    two_reg = np.float32(2.0 * reg)
    if update and acc.shape[0] == 2:
        _sgd_update2(acc[0, klo:khi], acc[1, klo:khi], Wt[klo:khi], np.float32(lr), two_reg)
        return
    total = acc[0, klo:khi]
    for q in range(1, acc.shape[0]):
        other = acc[q, klo:khi]
        for k in range(total.shape[0]):
            total[k] += other[k]
            other[k] = 0.0
    if update:
        _sgd_update(total, Wt[klo:khi], np.float32(lr), two_reg)
    else:
        _full_grad(total, Wt[klo:khi], two_reg, grad_out[klo:khi])


# ------------------------------------------------------------------------ parallel kernels
@njit(**_PJIT)
def _steps(X, y, idx, n_steps, Wt, DP, D, C, lr, reg, loss_kind, update, out_data, out_reg,
           acc, grad_out, team):
    """Run n_steps steps split by dims, on a team of `team` threads (one parallel region).

    Step s uses rows idx[s % len(idx)].

    Wt is the flat (C, DP) transposed weight; acc (NPART, C*DP) zeroed accumulators (left
    zeroed). If update, W -= lr * grad; else the full gradient goes into grad_out (flat).
    Returns False if the team never formed and one thread ran the call alone.
    """
    nparts = acc.shape[0]
    team = max(1, min(team, nparts))
    B = idx.shape[1]
    PS = np.zeros((nparts, B, C), dtype=np.float64)
    G = np.zeros((B, C), dtype=np.float32)
    loss_parts = np.zeros((n_steps, nparts), dtype=np.float64)
    sq_parts = np.zeros((n_steps, nparts), dtype=np.float64)
    sync = np.zeros((team + 1, 8), dtype=np.int64)  # a 64-byte line per member, + state
    for m in prange(team):
        how = _join(sync[team], team)
        if how == 1:
            _member(np.int64(m), team, X, y, idx, n_steps, Wt, DP, D, C, lr, reg, loss_kind,
                    update, acc, grad_out, PS, G, loss_parts, sq_parts, sync)
        elif how == 2:
            _member(np.int64(0), np.int64(1), X, y, idx, n_steps, Wt, DP, D, C, lr, reg,
                    loss_kind, update, acc, grad_out, PS, G, loss_parts, sq_parts, sync)
    scale = 1.0 / idx.shape[1]
    for step in range(n_steps):
        data = 0.0
        sq = 0.0
        for p in range(nparts):
            data += loss_parts[step, p]
            sq += sq_parts[step, p]
        out_data[step] = data * scale
        out_reg[step] = reg * sq
    return sync[team, 0] < ABANDONED


@njit(**_PJIT)
def _steps_rows(X, y, idx, n_steps, Wt, DP, D, C, lr, reg, loss_kind, update, out_data,
                out_reg, acc, grad_out):
    """Run n_steps steps split by rows (batches of SPLIT_ROWS_FROM rows and more, GD);
    step s uses rows idx[s % idx.shape[0]]. Same arguments as :func:`_steps` but the team:
    each step is two parallel regions, the rows' pass and the update. The per-step
    exchange of W between cores is small next to the rows' traffic here, and each row is
    read from DRAM by one core only."""
    nparts = acc.shape[0]
    size = C * DP
    # One 64-byte line per part (8 float64) so the parts' running sums never share a line.
    part_loss = np.zeros((nparts, 8), dtype=np.float64)
    part_sq = np.zeros((nparts, 8), dtype=np.float64)
    no_pred = np.empty(0, dtype=np.int32)
    for s in range(n_steps):
        rows = idx[s % idx.shape[0]]
        B = rows.shape[0]
        scale = 1.0 / B
        for p in prange(nparts):
            lo, hi = _bounds(B, nparts, p)
            _part_pass(X, y, rows, lo, hi, Wt, DP, D, C, 1, loss_kind, scale, acc[p], True,
                       no_pred, part_loss[p], idx[(s + 1) % idx.shape[0], lo:hi])
            klo, khi = _bounds(size, nparts, p)
            part_sq[p, 0] = _sumsq(Wt[klo:khi])
        data = 0.0
        sq = 0.0
        for p in range(nparts):
            data += part_loss[p, 0]
            sq += part_sq[p, 0]
        out_data[s] = data * scale
        out_reg[s] = reg * sq
        for p in prange(nparts):
            klo, khi = _bounds(size, nparts, p)
            _apply(acc, klo, khi, Wt, lr, reg, update, grad_out)


@njit(**_PJIT)
def _forward(X, y, rows, Wt, DP, D, C, groups, loss_kind, nparts, pred, losses, after):
    """Mean data loss of each of `groups` W's on rows into losses; returns group 0's
    number of correct predictions (labels into pred when sized). `after`: the next call's
    rows, as many (their first blocks are prefetched at the end), or empty."""
    # Padded to a 64-byte line per part (no false sharing between the parts' sums).
    part_loss = np.zeros((nparts, groups + 8), dtype=np.float64)
    part_correct = np.zeros((nparts, 8), dtype=np.int64)
    B = rows.shape[0]
    dummy = np.empty(0, dtype=np.float32)
    for p in prange(nparts):
        lo, hi = _bounds(B, nparts, p)
        part_correct[p, 0] = _part_pass(X, y, rows, lo, hi, Wt, DP, D, C, groups, loss_kind,
                                        1.0, dummy, False, pred, part_loss[p],
                                        after[lo:hi] if after.shape[0] == B else after[:0])
    correct = 0
    for k in range(groups):
        losses[k] = 0.0
    for p in range(nparts):
        correct += part_correct[p, 0]
        for k in range(groups):
            losses[k] += part_loss[p, k]
    for k in range(groups):
        losses[k] /= max(B, 1)
    return correct


@njit(**_JIT)
def _search(X, y, rows, cands, W, local, DP, D, C, loss_kind, nparts, out_data, accepted):
    """Random or local search, one proposal per row of ``rows``: proposal s scores the
    current W and the candidate ``cands[s]`` on rows[s] in one pass over the rows
    (:func:`_forward` with two groups), then keeps the candidate if its loss is lower (or
    the current loss is NaN and the candidate's is not).

    cands[s] holds the candidate (random search) or its step, already scaled (local
    search: the candidate is cands[s] + W, added here in float32 as numpy would). On
    return cands[s] holds the candidate itself, so the caller can compute ``reg·ΣW²`` of
    each accepted W; accepted[s] = 1 where it was taken; out_data[s] = the loss of W after
    step s. W stays transposed between proposals (its copy is refreshed only when a
    candidate is taken), and the whole run is one call."""
    n = rows.shape[0]
    size = C * DP
    Wt = _aligned_f32(2 * size)
    Wt[:] = 0.0
    _to_t_into(W, DP, Wt, 0)
    losses = np.empty(2, dtype=np.float64)
    no_pred = np.empty(0, dtype=np.int32)
    for s in range(n):
        cand = cands[s]
        if local:
            for d in range(D):
                for c in range(C):
                    cand[d, c] = cand[d, c] + W[d, c]
        _to_t_into(cand, DP, Wt, size)
        _forward(X, y, rows[s], Wt, DP, D, C, 2, loss_kind, nparts, no_pred, losses,
                 rows[(s + 1) % n])
        current, candidate = losses[0], losses[1]
        accepted[s] = 0
        if candidate < current or (current != current and candidate == candidate):
            W[:, :] = cand
            Wt[:size] = Wt[size:]
            accepted[s] = 1
            current = candidate
        out_data[s] = current


@njit(**_JIT)
def _to_t_into(W, DP, Wt, o):
    """Write W (D, C) transposed into Wt[o + c*DP + d] (the padding is left as it is)."""
    D, C = W.shape
    for d in range(D):
        for c in range(C):
            Wt[o + c * DP + d] = W[d, c]


@njit(**_JIT)
def _to_t(W, DP):
    """W (D, C) -> flat transposed padded (C*DP,) float32 on a cache line, zero padding."""
    Wt = _aligned_f32(W.shape[1] * DP)
    Wt[:] = 0.0
    _to_t_into(W, DP, Wt, 0)
    return Wt


@njit(**_JIT)
def _from_t(Wt, DP, W):
    """Copy flat transposed Wt back into W (D, C)."""
    D, C = W.shape
    for d in range(D):
        for c in range(C):
            W[d, c] = Wt[c * DP + d]


# ------------------------------------------------------------------------- public wrappers
def _aligned_zeros(rows: int, n: int) -> np.ndarray:
    """Zeroed float32 (rows, n) starting on a 64-byte cache line (see :func:`_aligned_f32`;
    n is a multiple of 16 here, so every row starts on a line)."""
    out = _aligned_f32(rows * n)
    out[:] = 0.0
    return out.reshape(rows, n)


def _check(X, y, W, *, loss_kind=None, idx=None) -> np.ndarray:
    """Validate the arguments; return X as the compiled kernels take it (:func:`_row_span`)."""
    if X.dtype != np.float32 or X.ndim != 2 or not (
            X.flags.c_contiguous or (X.strides[1] == 4 and X.strides[0] % 4 == 0
                                     and X.strides[0] >= 4 * X.shape[1])):
        raise ValueError("kernels: X must be a float32 (N, D) array with contiguous rows")
    if y.dtype != np.int32 or y.shape != (X.shape[0],):
        raise ValueError("kernels: y must be an int32 (N,) array matching X's rows")
    if W.dtype != np.float32 or W.ndim != 2 or W.shape[0] != X.shape[1]:
        raise ValueError("kernels: W must be a float32 (D, C) array with D = X.shape[1]")
    if not W.flags.c_contiguous or not W.flags.writeable:
        raise ValueError("kernels: W must be C-contiguous and writeable")
    if loss_kind is not None and loss_kind not in (SVM, SOFTMAX):
        raise ValueError(f"kernels: unknown loss kind {loss_kind!r} (use SVM=0 or SOFTMAX=1)")
    if idx is not None:
        if idx.dtype != np.int64:
            raise ValueError("kernels: batch indices must be int64")
        if idx.size == 0 or idx.shape[-1] == 0:
            raise ValueError("kernels: empty batch")
        if idx.min() < 0 or idx.max() >= X.shape[0]:
            raise ValueError(f"kernels: batch index out of range 0..{X.shape[0] - 1}")
    return _row_span(X)


def _check_out(out_data, out_reg, n):
    for out in (out_data, out_reg):
        if out.dtype != np.float64 or out.ndim != 1 or out.shape[0] < n:
            raise ValueError(f"kernels: loss outputs must be float64 arrays of length >= {n}")


def _run(X, y, idx, n_steps, W, lr, reg, loss_kind, update, out_data, out_reg, grad_out):
    D, C = W.shape
    DP = padded_dim(D)
    Wt = _to_t(W, DP)
    acc = _aligned_zeros(NPART, C * DP)
    # Contiguous float64 outputs keep to one compiled specialization.
    od = out_data if out_data.flags.c_contiguous else np.empty(n_steps)
    orr = out_reg if out_reg.flags.c_contiguous else np.empty(n_steps)
    args = (X, y, idx, n_steps, Wt, DP, D, C, float(lr), float(reg), int(loss_kind),
            bool(update), od, orr, acc, grad_out)
    if idx.shape[-1] >= SPLIT_ROWS_FROM:
        _parallel("steps", idx.shape[-1], n_steps * idx.shape[-1], _steps_rows, *args)
    else:
        _parallel("steps", idx.shape[-1], n_steps * idx.shape[-1], _steps, *args, _TEAM)
    if od is not out_data:
        out_data[:n_steps] = od[:n_steps]
    if orr is not out_reg:
        out_reg[:n_steps] = orr[:n_steps]
    return Wt, DP


def sgd_steps(X, y, idx, W, lr, reg, loss_kind, out_data, out_reg) -> None:
    """Run S = idx.shape[0] minibatch SGD steps in place on W.

    Step s uses rows ``idx[s]``: ``out_data[s]`` = mean data loss of the current W on them,
    ``out_reg[s]`` = ``reg * sum(W*W)`` (both before the update), then
    ``W -= lr * (dW_data + 2 * reg * W)``.

    Args:
        X: (N, D) float32 rows. y: (N,) int32 labels. idx: (S, B) int64 row indices.
        W: (D, C) float32 weights, updated in place.
        lr, reg: learning rate and L2 strength. loss_kind: SVM or SOFTMAX.
        out_data, out_reg: float64 arrays of length >= S.
    """
    if idx.ndim != 2:
        raise ValueError("kernels: idx must be an (S, B) int64 array")
    if idx.shape[0] == 0:
        return
    X = _check(X, y, W, loss_kind=loss_kind, idx=idx)
    _check_out(out_data, out_reg, idx.shape[0])
    idx = np.ascontiguousarray(idx)
    Wt, DP = _run(X, y, idx, idx.shape[0], W, lr, reg, loss_kind, True, out_data, out_reg,
                  np.empty(0, np.float32))
    _from_t(Wt, DP, W)


def gd_steps(X, y, W, lr, reg, loss_kind, out_data, out_reg, n_steps) -> None:
    """Run n_steps full-batch gradient descent steps over all N rows of X, in place on W.

    Same semantics and outputs as :func:`sgd_steps` with every step's batch = all rows.
    """
    X = _check(X, y, W, loss_kind=loss_kind)
    _check_out(out_data, out_reg, n_steps)
    if n_steps <= 0:
        return
    rows = np.arange(X.shape[0], dtype=np.int64)[None, :]
    Wt, DP = _run(X, y, rows, int(n_steps), W, lr, reg, loss_kind, True, out_data, out_reg,
                  np.empty(0, np.float32))
    _from_t(Wt, DP, W)


def loss_and_grad(X, y, idx, W, reg, loss_kind, dW_out) -> tuple[float, float]:
    """Loss parts and full gradient on rows idx (1-D int64), no update.

    Returns:
        ``(data_loss, reg_loss)``; ``dW_out`` (D, C) float32 receives
        ``dW_data + 2 * reg * W``.
    """
    X = _check(X, y, W, loss_kind=loss_kind, idx=idx)
    if dW_out.shape != W.shape or dW_out.dtype != np.float32:
        raise ValueError("kernels: dW_out must be a float32 array shaped like W")
    rows = np.ascontiguousarray(idx.reshape(1, -1))
    out_data = np.empty(1)
    out_reg = np.empty(1)
    D, C = W.shape
    DP = padded_dim(D)
    grad = np.empty(C * DP, dtype=np.float32)
    _run(X, y, rows, 1, W, 0.0, reg, loss_kind, False, out_data, out_reg, grad)
    _from_t(grad, DP, dW_out)
    return float(out_data[0]), float(out_reg[0])


def _forward_call(X, y, rows, Ws, loss_kind, pred):
    """Mean data losses of each W in Ws on rows (one pass) and W[0]'s correct count."""
    D, C = Ws[0].shape
    DP = padded_dim(D)
    if len(Ws) > 1:
        Wt = _aligned_zeros(len(Ws), C * DP)
        for k, W in enumerate(Ws):
            Wt[k] = _to_t(W, DP)
        Wt = Wt.reshape(-1)
    else:
        Wt = _to_t(Ws[0], DP)
    losses = np.empty(len(Ws))
    correct = _parallel(f"forward{len(Ws)}", rows.shape[0], rows.shape[0], _forward,
                        X, y, rows, Wt, DP, D, C, len(Ws), int(loss_kind), NPART, pred, losses,
                        rows[:0])
    return losses, correct


def batch_loss(X, y, idx, W, loss_kind) -> float:
    """Mean data loss of W on rows idx (1-D int64); no gradient, no regularization."""
    X = _check(X, y, W, loss_kind=loss_kind, idx=idx)
    losses, _ = _forward_call(X, y, np.ascontiguousarray(idx.reshape(-1)), [W], loss_kind,
                              np.empty(0, np.int32))
    return float(losses[0])


def batch_loss_pair(X, y, idx, W, W2, loss_kind) -> tuple[float, float]:
    """Mean data losses of W and W2 on the same rows idx, in one pass over the rows.

    Each row is read once for both. This is the scoring :func:`search_steps` does for every
    proposal, as one call (the tests check the searches against it). Returns
    ``(loss of W, loss of W2)``.
    """
    _check(X, y, W2)
    X = _check(X, y, W, loss_kind=loss_kind, idx=idx)
    if W2.shape != W.shape:
        raise ValueError("kernels: the two weight matrices must have the same shape")
    losses, _ = _forward_call(X, y, np.ascontiguousarray(idx.reshape(-1)), [W, W2],
                              loss_kind, np.empty(0, np.int32))
    return float(losses[0]), float(losses[1])


def search_steps(X, y, rows, cands, W, local, loss_kind, out_data, accepted) -> None:
    """Run S = rows.shape[0] random-search (local=False) or local-search (local=True)
    proposals in place on W, in one call (see :func:`_search`).

    Args:
        X: (N, D) float32 rows. y: (N,) int32 labels. rows: (S, B) int64 row indices.
        cands: (S, D, C) float32, C-contiguous: each proposal's candidate (random) or its
            scaled step (local); overwritten with the candidates themselves.
        W: (D, C) float32 weights, updated in place.
        out_data: float64 (>= S,): the data loss of W after each proposal.
        accepted: uint8 (>= S,): 1 where the proposal was taken.
    """
    S = rows.shape[0]
    if S == 0:
        return
    X = _check(X, y, W, loss_kind=loss_kind, idx=rows)
    D, C = W.shape
    if (cands.dtype != np.float32 or cands.shape[1:] != (D, C) or cands.shape[0] < S
            or not cands.flags.c_contiguous):
        raise ValueError("kernels: cands must be a C-contiguous float32 (S, D, C) array")
    if out_data.shape[0] < S or accepted.shape[0] < S or accepted.dtype != np.uint8:
        raise ValueError("kernels: out_data and accepted (uint8) need S entries")
    od = out_data if out_data.flags.c_contiguous else np.empty(S)
    rows = np.ascontiguousarray(rows)
    _parallel("search", rows.shape[1], S * rows.shape[1], _search, X, y, rows, cands[:S], W,
              bool(local), padded_dim(D), D, C, int(loss_kind), NPART, od, accepted)
    if od is not out_data:
        out_data[:S] = od[:S]


def evaluate(X, y, W, reg, loss_kind) -> tuple[float, float]:
    """(mean data loss + reg * sum(W*W), accuracy) of W over all rows of X."""
    X = _check(X, y, W, loss_kind=loss_kind)
    if X.shape[0] == 0:
        raise ValueError("kernels: evaluate needs at least one row")
    rows = np.arange(X.shape[0], dtype=np.int64)
    losses, correct = _forward_call(X, y, rows, [W], loss_kind, np.empty(0, np.int32))
    loss = losses[0]
    reg_loss = float(reg) * float(np.sum(W.astype(np.float64) ** 2))
    return float(loss) + reg_loss, float(correct) / X.shape[0]


def predict(X, W) -> np.ndarray:
    """Predicted labels (N,) int32: argmax of X @ W per row."""
    y = np.zeros(X.shape[0], dtype=np.int32)
    X = _check(X, y, W)
    pred = np.zeros(X.shape[0], dtype=np.int32)
    if X.shape[0]:
        _forward_call(X, y, np.arange(X.shape[0], dtype=np.int64), [W], SVM, pred)
    return pred


def warmup() -> float:
    """Compile (or load from the cache) every kernel the trainer uses; return seconds taken."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 5)).astype(np.float32)
    y = (np.arange(8) % 3).astype(np.int32)
    W = np.zeros((5, 3), dtype=np.float32)
    idx = np.zeros((2, 4), dtype=np.int64)
    out_d = np.empty(2)
    out_r = np.empty(2)
    sgd_steps(X, y, idx, W, 1e-3, 1e-3, SVM, out_d, out_r)
    gd_steps(X, y, W, 1e-3, 1e-3, SOFTMAX, out_d, out_r, 1)
    loss_and_grad(X, y, idx[0], W, 1e-3, SVM, np.empty_like(W))
    batch_loss(X, y, idx[0], W, SOFTMAX)
    batch_loss_pair(X, y, idx[0], W, W, SVM)
    search_steps(X, y, idx, np.zeros((2, 5, 3), np.float32), W, False, SVM, out_d,
                 np.zeros(2, np.uint8))
    evaluate(X, y, W, 1e-3, SVM)
    predict(X, W)
    return time.perf_counter() - start
