"""The four optimizers: the lesson's ladder, search semantics, determinism across chunks."""

from __future__ import annotations

import numpy as np
import pytest

from engine import kernels, optim

N, D, C = 600, 21, 4


def _blobs(seed=0):
    """N rows around C random class means in D-1 dims (plus the bias): nearly separable."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((C, D - 1))
    y = rng.integers(0, C, N).astype(np.int32)
    X = np.empty((N, D), dtype=np.float32)
    X[:, :-1] = means[y] + rng.standard_normal((N, D - 1))
    X[:, -1] = 1.0
    return X, y


def _params(kind=kernels.SVM):
    return optim.StepParams(loss_kind=kind, lr=1e-2, reg=1e-3, batch_size=32, sigma=0.05,
                            init_scale=0.1)


def _run(opt, X, y, seed, n_steps, kind=kernels.SVM, chunks=None):
    rng = np.random.default_rng(seed)
    W = optim.init_weights(rng, D, C, 0.1)
    out_d, out_r = np.empty(n_steps), np.empty(n_steps)
    start = 0
    for size in chunks or [n_steps]:
        optim.run_steps(opt, X, y, W, rng, _params(kind), size, out_d[start:], out_r[start:])
        start += size
    return W, out_d, out_r


@pytest.mark.parametrize("kind", [kernels.SVM, kernels.SOFTMAX])
def test_sgd_beats_local_beats_random(kind):
    X, y = _blobs()
    final = {}
    for opt in ("sgd", "local", "random"):
        W, out_d, out_r = _run(opt, X, y, seed=3, n_steps=100, kind=kind)
        final[opt] = kernels.evaluate(X, y, W, 1e-3, kind)[0]
        if opt == "sgd":
            start = out_d[0] + out_r[0]
    assert final["sgd"] < final["local"] < final["random"], final
    assert final["sgd"] < 0.5 * start


def test_gd_descends_and_matches_kernel_semantics():
    X, y = _blobs()
    W, out_d, out_r = _run("gd", X, y, seed=1, n_steps=30)
    total = out_d + out_r
    assert total[-1] < 0.5 * total[0]
    rng = np.random.default_rng(1)
    W0 = optim.init_weights(rng, D, C, 0.1)
    assert out_d[0] == pytest.approx(kernels.evaluate(X, y, W0, 0.0, kernels.SVM)[0], rel=1e-6)


@pytest.mark.parametrize("opt", ["random", "local"])
def test_search_keeps_candidate_only_when_strictly_better(opt):
    X, y = _blobs()
    W, out_d, out_r = _run(opt, X, y, seed=4, n_steps=15)
    # Replay by hand with the same generator calls.
    rng = np.random.default_rng(4)
    p = _params()
    mine = optim.init_weights(rng, D, C, 0.1)
    kept = 0
    for s in range(15):
        rows = rng.integers(0, N, size=p.batch_size)
        if opt == "random":
            cand = optim.init_weights(rng, D, C, p.init_scale)
        else:
            cand = rng.standard_normal((D, C), dtype=np.float32) * np.float32(p.sigma) + mine
        now = kernels.batch_loss(X, y, rows, mine, p.loss_kind)
        new = kernels.batch_loss(X, y, rows, cand, p.loss_kind)
        if new < now:
            mine, now, kept = cand, new, kept + 1
        assert out_d[s] == pytest.approx(now, rel=1e-6)
        assert out_r[s] == pytest.approx(p.reg * np.sum(mine.astype(np.float64) ** 2))
    assert np.array_equal(W, mine)
    assert 0 < kept < 15


def _search_one_at_a_time(opt, X, y, W, rng, p, n):
    """The searches as they ran before kernels.search_steps: a proposal per Python
    iteration, both W's scored with kernels.batch_loss_pair."""
    out_d, out_r = np.empty(n), np.empty(n)
    reg_now = p.reg * float(np.sum(W.astype(np.float64).ravel() ** 2))
    for s in range(n):
        rows = rng.integers(0, X.shape[0], size=p.batch_size)
        if opt == "random":
            cand = optim.init_weights(rng, D, C, p.init_scale)
        else:
            cand = rng.standard_normal((D, C), dtype=np.float32)
            cand *= np.float32(p.sigma)
            cand += W
        now, new = kernels.batch_loss_pair(X, y, rows, W, cand, p.loss_kind)
        if new < now or (np.isnan(now) and not np.isnan(new)):
            W[...] = cand
            now = new
            reg_now = p.reg * float(np.sum(W.astype(np.float64).ravel() ** 2))
        out_d[s], out_r[s] = now, reg_now
    return out_d, out_r


@pytest.mark.parametrize("kind", [kernels.SVM, kernels.SOFTMAX])
@pytest.mark.parametrize("opt", ["random", "local"])
@pytest.mark.parametrize("start", ["small", "nan"])
def test_search_in_one_kernel_call_gives_the_one_at_a_time_bits(opt, kind, start, monkeypatch):
    # Several kernel calls (chunks of 4 proposals) and a partial last one; a W that starts
    # NaN is left by random search at the first proposal, kept by local search (its
    # candidates are NaN too).
    monkeypatch.setattr(optim, "SEARCH_CHUNK", 4)
    X, y = _blobs()
    p = optim.StepParams(loss_kind=kind, batch_size=16, reg=1e-3, sigma=0.05, init_scale=0.1)
    W0 = optim.init_weights(np.random.default_rng(3), D, C, 0.1)
    if start == "nan":
        W0[0, 0] = np.nan
    W_ref, rng_ref = W0.copy(), np.random.default_rng(5)
    d_ref, r_ref = _search_one_at_a_time(opt, X, y, W_ref, rng_ref, p, 11)
    W, rng = W0.copy(), np.random.default_rng(5)
    d, r = np.empty(11), np.empty(11)
    optim.run_steps(opt, X, y, W, rng, p, 11, d, r)
    assert np.array_equal(W, W_ref, equal_nan=True)
    assert np.array_equal(d, d_ref, equal_nan=True) and np.array_equal(r, r_ref, equal_nan=True)
    assert rng.bit_generator.state == rng_ref.bit_generator.state  # the same draws, in order
    assert np.isnan(W).any() == (start == "nan" and opt == "local")


@pytest.mark.parametrize("opt", optim.OPTIMIZERS)
def test_same_seed_same_numbers_whatever_the_chunks(opt):
    X, y = _blobs()
    W1, d1, r1 = _run(opt, X, y, seed=7, n_steps=12)
    W2, d2, r2 = _run(opt, X, y, seed=7, n_steps=12, chunks=[5, 1, 6])
    assert np.array_equal(W1, W2)
    assert np.array_equal(d1, d2) and np.array_equal(r1, r2)
    W3, d3, _ = _run(opt, X, y, seed=8, n_steps=12)
    assert not np.array_equal(W1, W3)


def test_idx_buffer_is_reused():
    X, y = _blobs()
    rng = np.random.default_rng(0)
    W = optim.init_weights(rng, D, C, 0.1)
    buf = np.full((20, 32), -1, dtype=np.int64)
    optim.run_steps("sgd", X, y, W, rng, _params(), 10, np.empty(10), np.empty(10), buf)
    assert np.all(buf[:10] >= 0) and np.all(buf[10:] == -1)


def test_init_weights():
    W = optim.init_weights(np.random.default_rng(0), 7, 3, 1e-4)
    assert W.dtype == np.float32 and W.shape == (7, 3) and W.flags.c_contiguous
    assert 1e-5 < W.std() < 1e-3


def test_bad_arguments():
    X, y = _blobs()
    W = np.zeros((D, C), np.float32)
    rng = np.random.default_rng(0)
    out = np.empty(3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.run_steps("adam", X, y, W, rng, _params(), 3, out, out)
    big = optim.StepParams(batch_size=N + 1)
    with pytest.raises(ValueError, match="batch size"):
        optim.run_steps("sgd", X, y, W, rng, big, 3, out, out)


def test_step_loops_never_call_blas(monkeypatch, blobs):
    # numpy's BLAS (OpenBLAS) runs a dot of W's size on worker threads that then busy-wait
    # for about 0.1 s, taking a core from the kernels: the step loops must not call it.
    from engine.config import Config
    from engine.trainer import Trainer

    def no_blas(*args, **kwargs):
        raise AssertionError("BLAS called from a step loop")

    for name in ("dot", "vdot", "inner", "matmul"):
        monkeypatch.setattr(np, name, no_blas)
    monkeypatch.setattr(np.linalg, "norm", no_blas)
    for optimizer in ("random", "local", "sgd", "gd"):
        t = Trainer(Config(data="blobs", optimizer=optimizer, batch_size=64, eval_every=5,
                           seed=1), blobs)
        for _ in range(3):
            t.run_chunk()
        assert t.step > 0
