"""Numba kernels against the float64 numpy oracle, determinism, threads, NaN and bad input."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from engine import kernels, reference

REF = {kernels.SVM: reference.svm_loss_vectorized,
       kernels.SOFTMAX: reference.softmax_loss_vectorized}
KINDS = [kernels.SVM, kernels.SOFTMAX]
TOL = 1e-4
"""float32 kernels vs float64 reference: relative to the norm of the reference value."""


def _data(seed: int = 0, N: int = 500, D: int = 49, C: int = 10):
    """N rows (last column the bias 1.0) with corner rows, labels, and a small W.

    Corner rows: 0 all zeros (bias too, so every score ties at 0), 1 huge values (1e3),
    2 a copy of row 3 (identical rows), and W's columns 0 and 1 are equal, so every row
    has a tie between the scores of classes 0 and 1.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    X[:, -1] = 1.0
    X[0] = 0.0
    X[1] = 1e3 * rng.standard_normal(D).astype(np.float32)
    X[2] = X[3]
    y = rng.integers(0, C, N).astype(np.int32)
    y[:4] = [0, 1, 1, 2]
    W = (0.01 * rng.standard_normal((D, C))).astype(np.float32)
    W[:, 1] = W[:, 0]
    return X, y, W


def _close(actual, expected, tol=TOL):
    """Norm-relative comparison: |actual - expected| <= tol * |expected| (Frobenius)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    err = np.linalg.norm(actual - expected)
    assert err <= tol * max(np.linalg.norm(expected), 1e-30), (err, np.linalg.norm(expected))


@pytest.fixture(params=["dims", "rows"])
def split(request, monkeypatch):
    """Run the test with every step split by dims (small batches) or by rows (large)."""
    monkeypatch.setattr(kernels, "SPLIT_ROWS_FROM", 10**9 if request.param == "dims" else 1)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reg", [0.0, 1e-3, 50.0])
@pytest.mark.parametrize("batch", [1, 3, 7, 64, 500])
def test_loss_and_grad_match_reference(kind, reg, batch, split):
    X, y, W = _data()
    rng = np.random.default_rng(batch)
    idx = np.arange(500) if batch == 500 else rng.integers(0, 500, batch)
    idx[0] = 0 if batch < 500 else idx[0]  # the all-zero row is always in the batch
    if batch >= 7:
        idx[1:4] = [1, 2, 3]
    dW = np.empty_like(W)
    data_loss, reg_loss = kernels.loss_and_grad(X, y, idx.astype(np.int64), W, reg, kind, dW)
    ref_loss, ref_grad = REF[kind](W, X[idx], y[idx], reg)
    _close(data_loss + reg_loss, ref_loss)
    _close(reg_loss, reg * np.sum(W.astype(np.float64) ** 2), 1e-12)
    _close(dW, ref_grad)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_loss_evaluate_predict(kind):
    X, y, W = _data()
    idx = np.arange(0, 500, 3, dtype=np.int64)
    ref_loss, _ = REF[kind](W, X[idx], y[idx], 0.0)
    _close(kernels.batch_loss(X, y, idx, W, kind), ref_loss)
    other = (W + 0.01).astype(np.float32)
    pair = kernels.batch_loss_pair(X, y, idx, W, other, kind)
    _close(pair[0], ref_loss)
    _close(pair[1], REF[kind](other, X[idx], y[idx], 0.0)[0])
    loss, acc = kernels.evaluate(X, y, W, 0.5, kind)
    _close(loss, REF[kind](W, X, y, 0.5)[0])
    scores = X.astype(np.float64) @ W.astype(np.float64)
    pred = kernels.predict(X, W)
    assert pred.dtype == np.int32
    clear = np.sort(scores, axis=1)[:, -1] - np.sort(scores, axis=1)[:, -2] > 1e-4
    np.testing.assert_array_equal(pred[clear], scores.argmax(axis=1)[clear])
    assert acc == pytest.approx(np.mean(pred == y))


def _reference_run(X, y, W, idx_rows, lr, reg, fn):
    W = W.astype(np.float64)
    losses = []
    for rows in idx_rows:
        loss, grad = fn(W, X[rows], y[rows], reg)
        losses.append(loss)
        W = W - lr * grad
    return W, np.array(losses)


@pytest.mark.parametrize("kind", KINDS)
def test_sgd_steps_match_reference_loop(kind, split):
    X, y, W = _data()
    idx = np.random.default_rng(5).integers(0, 500, (20, 32))
    out_d, out_r = np.empty(20), np.empty(20)
    W_k = W.copy()
    kernels.sgd_steps(X, y, idx, W_k, 1e-2, 0.1, kind, out_d, out_r)
    W_ref, losses = _reference_run(X, y, W, idx, 1e-2, 0.1, REF[kind])
    _close(out_d + out_r, losses)
    _close(W_k, W_ref)
    assert out_d[0] + out_r[0] == pytest.approx(REF[kind](W, X[idx[0]], y[idx[0]], 0.1)[0],
                                                rel=TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_gd_steps_match_reference_loop(kind, split):
    X, y, W = _data()
    out_d, out_r = np.empty(6), np.empty(6)
    W_k = W.copy()
    kernels.gd_steps(X, y, W_k, 1e-2, 0.1, kind, out_d, out_r, 5)
    W_ref, losses = _reference_run(X, y, W, [np.arange(500)] * 5, 1e-2, 0.1, REF[kind])
    _close(out_d[:5] + out_r[:5], losses)
    _close(W_k, W_ref)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_sgd_is_bit_identical(kind, split):
    X, y, W = _data()
    idx = np.random.default_rng(7).integers(0, 500, (12, 37))
    one, a_d, a_r = W.copy(), np.empty(12), np.empty(12)
    kernels.sgd_steps(X, y, idx, one, 1e-2, 0.5, kind, a_d, a_r)
    two, b_d, b_r = W.copy(), np.empty(12), np.empty(12)
    kernels.sgd_steps(X, y, idx[:5], two, 1e-2, 0.5, kind, b_d[:5], b_r[:5])
    kernels.sgd_steps(X, y, idx[5:], two, 1e-2, 0.5, kind, b_d[5:], b_r[5:])
    assert np.array_equal(one, two)
    assert np.array_equal(a_d, b_d) and np.array_equal(a_r, b_r)
    assert not np.array_equal(one, W)


def test_chunked_gd_is_bit_identical(split):
    X, y, W = _data()
    one, a_d, a_r = W.copy(), np.empty(4), np.empty(4)
    kernels.gd_steps(X, y, one, 1e-2, 0.5, kernels.SOFTMAX, a_d, a_r, 4)
    two, b_d, b_r = W.copy(), np.empty(4), np.empty(4)
    kernels.gd_steps(X, y, two, 1e-2, 0.5, kernels.SOFTMAX, b_d[:1], b_r[:1], 1)
    kernels.gd_steps(X, y, two, 1e-2, 0.5, kernels.SOFTMAX, b_d[1:], b_r[1:], 3)
    assert np.array_equal(one, two) and np.array_equal(a_d, b_d)


def test_concurrent_calls_from_threads_are_deterministic():
    X, y, W = _data()
    idx = np.random.default_rng(9).integers(0, 500, (40, 64))
    expected = W.copy()
    kernels.sgd_steps(X, y, idx, expected, 1e-2, 0.1, kernels.SVM, np.empty(40), np.empty(40))
    results = [W.copy() for _ in range(4)]

    def work(k):
        for _ in range(3):
            Wk = W.copy()
            kernels.sgd_steps(X, y, idx, Wk, 1e-2, 0.1, kernels.SVM, np.empty(40), np.empty(40))
            results[k] = Wk

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for Wk in results:
        assert np.array_equal(Wk, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_inf_do_not_crash(kind, split):
    X, y, W = _data()
    idx = np.random.default_rng(3).integers(0, 500, (3, 16))
    bad = W.copy()
    bad[5, 2] = np.nan
    out_d, out_r = np.empty(3), np.empty(3)
    kernels.sgd_steps(X, y, idx, bad, 1e-2, 0.1, kind, out_d, out_r)
    assert np.all(np.isnan(out_d + out_r))
    kernels.gd_steps(X, y, bad, 1e-2, 0.0, kind, out_d, out_r, 2)
    assert np.isnan(out_d[0])
    assert np.isnan(kernels.batch_loss(X, y, idx[0], bad, kind))
    assert np.isnan(kernels.evaluate(X, y, bad, 0.0, kind)[0])
    assert kernels.predict(X, bad).shape == (500,)
    X_inf = X.copy()
    X_inf[idx[0, 0], 0] = np.inf
    data, _ = kernels.loss_and_grad(X_inf, y, idx[0], W.copy(), 0.0, kind, np.empty_like(W))
    assert not np.isfinite(data)
    huge = W * np.float32(1e30)
    kernels.sgd_steps(X, y, idx, huge, 1e30, 0.1, kind, out_d, out_r)
    assert not np.all(np.isfinite(huge))


def _every_result(X, y, W, kind):
    """Every kernel entry point's outputs on X, as one list of arrays."""
    out = []
    idx = np.random.default_rng(3).integers(0, X.shape[0], (6, 40))
    for steps, fn in ((idx, None), (None, 3)):
        Wk, d, r = W.copy(), np.zeros(6), np.zeros(6)
        if fn is None:
            kernels.sgd_steps(X, y, steps, Wk, 1e-2, 0.1, kind, d, r)
        else:
            kernels.gd_steps(X, y, Wk, 1e-2, 0.1, kind, d, r, fn)
        out += [Wk, d, r]
    dW = np.empty_like(W)
    out += [np.array(kernels.loss_and_grad(X, y, idx[0], W, 0.1, kind, dW)), dW]
    out += [np.array(kernels.batch_loss_pair(X, y, idx[1], W, W + 0.01, kind))]
    out += [np.array(kernels.evaluate(X, y, W, 0.1, kind)), kernels.predict(X, W)]
    Ws, acc, d = W.copy(), np.zeros(4, np.uint8), np.empty(4)
    cands = np.random.default_rng(4).standard_normal((4, *W.shape)).astype(np.float32)
    kernels.search_steps(X, y, idx[:4], cands * 0.01, Ws, True, kind, d, acc)
    return out + [Ws, acc, d]


@pytest.mark.parametrize("kind", KINDS)
def test_rows_padded_in_memory_give_the_same_bits(kind, split):
    """The datasets' layout (rows on cache lines, aligned_rows) and a column slice of a
    wider array (its last row's padding past the buffer's end) give exactly the bits of a
    packed copy, from every entry point: the kernels read each row's D floats only."""
    from engine.data import aligned_rows

    X, y, W = _data(D=37)  # 37 floats a row: a packed row starts on a cache line 1 in 16
    padded = aligned_rows(*X.shape)
    padded[...] = X
    assert not padded.flags.c_contiguous and padded.strides[0] == 48 * 4
    assert all(padded[i].ctypes.data % 64 == 0 for i in range(X.shape[0]))
    wide = np.random.default_rng(9).standard_normal((X.shape[0], 50)).astype(np.float32)
    wide[:, 13:] = X
    sliced = wide[:, 13:]  # the span the kernels index runs 13 floats past the buffer
    expected = _every_result(np.ascontiguousarray(X), y, W, kind)
    for layout in (padded, sliced):
        for a, b in zip(_every_result(layout, y, W, kind), expected, strict=True):
            assert np.array_equal(a, b, equal_nan=True)


def test_aligned_rows_layout():
    from engine.data import aligned_rows

    for n, d in ((0, 17), (1, 16), (3, 3073), (7, 33)):
        X = aligned_rows(n, d)
        assert X.shape == (n, d) and X.dtype == np.float32
        full = np.lib.stride_tricks.as_strided(X, (n, X.strides[0] // 4), (X.strides[0], 4))
        assert X.strides[0] % 64 == 0 and X.strides[0] // 4 - d < 16
        assert n == 0 or (X.ctypes.data % 64 == 0 and not full[:, d:].any())
    small = aligned_rows(5, 3)  # no whole vector in a row: packed, no padding
    assert small.shape == (5, 3) and small.flags.c_contiguous


def test_bad_input_is_a_clear_error():
    X, y, W = _data()
    out = np.empty(2)
    with pytest.raises(ValueError, match="out of range"):
        kernels.sgd_steps(X, y, np.full((2, 3), 500, np.int64), W, 0.1, 0.0, 0, out, out)
    with pytest.raises(ValueError, match="float32"):
        kernels.batch_loss(X.astype(np.float64), y, np.zeros(3, np.int64), W, 0)
    for strided in (np.asfortranarray(X), np.repeat(X, 2, axis=1)[:, ::2], X[::-1]):
        with pytest.raises(ValueError, match="contiguous rows"):
            kernels.batch_loss(strided, y, np.zeros(3, np.int64), W, 0)
    with pytest.raises(ValueError, match="loss kind"):
        kernels.batch_loss(X, y, np.zeros(3, np.int64), W, 7)
    with pytest.raises(ValueError, match="length"):
        kernels.sgd_steps(X, y, np.zeros((3, 3), np.int64), W, 0.1, 0.0, 0, out, out)


def test_invalid_label_gives_nan_not_a_crash(split):
    X, y, W = _data()
    y = y.copy()
    y[0] = 99
    assert np.isnan(kernels.batch_loss(X, y, np.array([0, 5], np.int64), W, kernels.SVM))
    out_d, out_r = np.empty(1), np.empty(1)
    kernels.sgd_steps(X, y, np.array([[0, 5, 6]], np.int64), W, 1e-2, 0.0, kernels.SVM,
                      out_d, out_r)
    assert np.isnan(out_d[0]) and np.all(np.isfinite(W))  # the bad row adds no gradient


def test_warmup_returns_seconds():
    assert kernels.warmup() >= 0.0


def test_thread_count_does_not_change_the_bits(split):
    X, y, W = _data()
    idx = np.random.default_rng(11).integers(0, 500, (6, 64))
    results = []
    try:
        for n in (kernels.NPART, 1):
            kernels.set_threads(n)
            assert kernels.threads_in_use() == min(n, numba.config.NUMBA_NUM_THREADS)
            Wn = W.copy()
            kernels.sgd_steps(X, y, idx, Wn, 1e-2, 0.1, kernels.SOFTMAX, np.empty(6),
                              np.empty(6))
            results.append(Wn)
    finally:
        kernels.set_threads(None)
    assert np.array_equal(results[0], results[1])
    with pytest.raises(ValueError, match="at least 1"):
        kernels.set_threads(0)


def test_thread_chooser_follows_the_measured_speed():
    # Timings are fed in by hand: the rule, not the machine, is under test.
    ch = kernels._ThreadChooser()
    assert ch.pick(1) == 1
    assert ch.pick(2) == 1  # the first call measures the other choice (1 thread) ...
    ch.record(1, 1.0, 100)  # 10 ms per unit on 1 thread
    assert ch.current == 2 and ch.pick(2) == 2  # ... and the default stays: all threads
    ch.record(2, 0.5, 100)  # 5 ms per unit on 2 threads
    assert ch.current == 2
    for _ in range(kernels.PROBE_EVERY - 1):
        assert ch.pick(2) == 2
        ch.record(2, 0.5, 100)
    assert ch.pick(2) == 1  # time for a probe of 1 thread ...
    ch.record(1, 1.0, 100)  # ... which loses: stay on 2, probing less often
    assert ch.current == 2 and ch.backoff == 2 * kernels.PROBE_EVERY
    for _ in range(2 * kernels.PROBE_EVERY - 1):
        assert ch.pick(2) == 2
        ch.record(2, 0.5, 100)
    # Dashboard frames: two calls in a row several times slower are not a collapse.
    ch.record(2, 20.0, 100)
    ch.record(2, 20.0, 100)
    assert ch.current == 2
    assert ch.pick(2) == 1  # time for a probe of 1 thread ...
    ch.record(1, 0.9, 100)  # ... slightly faster than 2 threads' median: not enough
    assert ch.current == 2 and ch.backoff == 4 * kernels.PROBE_EVERY
    # A machine that became oversubscribed: once most recent calls collapse, switch.
    slow = 0
    while ch.current == 2 and slow <= kernels.WINDOW:
        ch.record(2, 20.0, 100)
        slow += 1
    assert ch.current == 1 and ch.pick(2) == 1
    assert 2 + slow > kernels.WINDOW // 2  # a majority of the window was slow
    for _ in range(kernels.PROBE_EVERY):
        ch.record(1, 1.0, 100)
    assert ch.pick(2) == 2  # later, 2 threads get another try
    ch.record(2, 0.2, 100)  # the machine is quiet again: the probe wins
    assert ch.current == 2


def test_automatic_threads_give_the_same_bits_as_fixed():
    X, y, W = _data()
    idx = np.random.default_rng(12).integers(0, 500, (3, 64))
    results = []
    try:
        for n in (None, 1, None, None):
            kernels.set_threads(n)
            Wn = W.copy()
            kernels.sgd_steps(X, y, idx, Wn, 1e-2, 0.1, kernels.SVM, np.empty(3), np.empty(3))
            results.append(Wn)
    finally:
        kernels.set_threads(None)
    for Wn in results[1:]:
        assert np.array_equal(results[0], Wn)


def test_parallel_work_from_any_thread_runs_on_one_kernel_thread():
    # One OpenMP team for the whole process: a second team makes GNU OpenMP stop spinning
    # at barriers, and every step then pays two futex wake-ups.
    seen = []
    worker = threading.Thread(target=lambda: seen.append(
        kernels._KERNEL_THREAD.call(threading.get_ident)))
    worker.start()
    worker.join()
    seen.append(kernels._KERNEL_THREAD.call(threading.get_ident))
    assert seen[0] == seen[1]
    assert seen[0] not in (threading.get_ident(), worker.ident)
    X, y, W = _data(seed=5)
    idx = np.arange(40, dtype=np.int64)
    losses = []
    for _ in range(2):
        t = threading.Thread(target=lambda: losses.append(
            kernels.batch_loss(X, y, idx, W, kernels.SVM)))
        t.start()
        t.join()
    assert losses[0] == losses[1] == kernels.batch_loss(X, y, idx, W, kernels.SVM)
    assert [t.name for t in threading.enumerate()].count("descent-kernels") == 1


def test_kernel_thread_hands_back_exceptions():
    with pytest.raises(ZeroDivisionError):
        kernels._KERNEL_THREAD.call(lambda: 1 / 0)
    assert kernels._KERNEL_THREAD.call(lambda: 42) == 42  # still serving


def test_interrupt_while_waiting_is_raised_after_the_call_returns():
    import signal

    class Interrupted(Exception):
        pass

    started, handled, checked, release = (threading.Event() for _ in range(4))
    finished: list[bool] = []
    at_raise: list[list[bool]] = []

    def job():
        started.set()
        release.wait(10)
        finished.append(True)
        return 7

    def handler(signum, frame):
        handled.set()
        raise Interrupted

    def poke():
        started.wait(10)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        handled.wait(10)
        # A caller that gave up at the signal records `finished` empty and sets `checked`;
        # a correct one is still waiting, so this wait runs out and the job is let finish.
        checked.wait(0.2)
        release.set()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        threading.Thread(target=poke).start()
        try:
            kernels._KERNEL_THREAD.call(job)
        except Interrupted:
            at_raise.append(list(finished))
            checked.set()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert at_raise == [[True]]


def _raw_steps(X, y, idx, W, kind, nparts, team, split_rows):
    """The step kernel called directly with `nparts` accumulators: the dim split on a team
    of `team` threads, or the row split on `team` Numba threads."""
    D, C = W.shape
    DP = kernels.padded_dim(D)
    Wt = kernels._to_t(W, DP)
    out_d, out_r = np.empty(len(idx)), np.empty(len(idx))
    acc = np.zeros((nparts, C * DP), np.float32)
    args = (X, y, idx, len(idx), Wt, DP, D, C, 1e-2, 0.1, kind, True, out_d, out_r, acc,
            np.empty(0, np.float32))
    formed = True
    if split_rows:
        before = numba.get_num_threads()
        numba.set_num_threads(min(team, numba.config.NUMBA_NUM_THREADS))
        try:
            kernels._steps_rows(*args)
        finally:
            numba.set_num_threads(before)
    else:
        formed = kernels._steps(*args, team)
    Wn = np.empty_like(W)
    kernels._from_t(Wt, DP, Wn)
    assert not acc.any()  # accumulators are left zeroed for the next call
    return Wn, out_d, out_r, formed


@pytest.mark.parametrize("split_rows", [False, True])
def test_parts_and_team_size_never_change_the_bits(split_rows):
    # 5 parts on 1, 2 and 3 threads: a thread runs several parts, some more than others;
    # every part's work and the order of the sums stay the same.
    X, y, W = _data(D=100)
    idx = np.random.default_rng(13).integers(0, 500, (4, 300))
    base = _raw_steps(X, y, idx, W, kernels.SOFTMAX, 5, 1, split_rows)
    assert base[3]
    W_ref, losses = _reference_run(X, y, W, idx, 1e-2, 0.1, REF[kernels.SOFTMAX])
    _close(base[0], W_ref)
    _close(base[1] + base[2], losses)
    for team in (2, 3):
        got = _raw_steps(X, y, idx, W, kernels.SOFTMAX, 5, team, split_rows)
        for a, b in zip(base[:3], got[:3], strict=True):
            assert np.array_equal(a, b)


def test_a_team_that_never_forms_runs_the_call_alone():
    # Two members on one thread (Numba set to 1 thread): the first waits for the second,
    # which cannot start until the first returns. After a bounded wait (counted in
    # sleeps, not measured) it runs the whole call alone: same bits, reported as not formed.
    X, y, W = _data()
    idx = np.random.default_rng(14).integers(0, 500, (3, 40))
    alone = _raw_steps(X, y, idx, W, kernels.SVM, 2, 1, False)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        stuck = _raw_steps(X, y, idx, W, kernels.SVM, 2, 2, False)
    finally:
        numba.set_num_threads(before)
    assert alone[3] and not stuck[3]
    for a, b in zip(alone[:3], stuck[:3], strict=True):
        assert np.array_equal(a, b)


def test_dim_slices_start_on_cache_lines_and_cover_d():
    for D in (1, 5, 16, 17, 49, 3073):
        for nparts in (1, 2, 3, 16):
            edges = [kernels._dedge(D, nparts, p) for p in range(nparts + 1)]
            assert edges[0] == 0 and edges[-1] == D
            assert all(a <= b for a, b in zip(edges[:-1], edges[1:], strict=True))
            assert all(e % 16 == 0 for e in edges[:-1])
