"""Explicit SIMD vectors (engine/simd.py) and the block kernels built on them, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from engine import kernels
from engine.simd import LANES, vfma, vload, vprefetch, vsplat, vstore, vsum

L = LANES


@njit(cache=True, nogil=True)
def _ops(a, b, c, out):
    """out[0:L] = a*b + c; out[L:2L] = splat(2.5); returns the lane sum of a (from 1)."""
    va = vload(a, 1)
    vstore(out, 0, vfma(va, vload(b, 0), vload(c, 0)))
    vstore(out, L, vsplat(2.5))
    return vsum(va)


def _tree_sum(v: np.ndarray) -> np.float32:
    """numpy float32 model of vsum: the halves added lane by lane until one lane is left."""
    v = v.astype(np.float32)
    while v.size > 1:
        h = v.size // 2
        v = v[:h] + v[h:]
    return v[0]


def test_vector_ops_match_their_numpy_model():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(L + 1).astype(np.float32) * np.float32(1e3)
    b = rng.standard_normal(L).astype(np.float32)
    c = rng.standard_normal(L).astype(np.float32)
    out = np.zeros(2 * L, np.float32)
    total = _ops(a, b, c, out)
    # one rounding: the float64 product-sum rounded once to float32
    expected = (a[1:].astype(np.float64) * b + c).astype(np.float32)
    assert np.array_equal(out[:L], expected)
    assert np.all(out[L:] == np.float32(2.5))
    assert total == _tree_sum(a[1:])  # bit for bit: a fixed order


def test_vsum_order_is_fixed_and_visible():
    # 1e8 + 1 - 1e8 depends on the order of the additions: pin the tree order down
    v = np.zeros(L + 1, np.float32)
    v[1], v[2], v[1 + L // 2] = 1e8, 1.0, -1e8
    got = _ops(v, np.zeros(L, np.float32), np.zeros(L, np.float32), np.zeros(2 * L, np.float32))
    assert got == _tree_sum(v[1:])
    assert got == np.float32(1.0)  # the halves pair lane 0 with lane L/2 first


@pytest.mark.parametrize("D", [5, 49, 600, 3073])
@pytest.mark.parametrize("C", [3, 7, 10])
@pytest.mark.parametrize("nb", [1, 3, 4, 6, 32])
def test_scores_block_matches_numpy(D, C, nb):
    rng = np.random.default_rng(D * 100 + C * 10 + nb)
    X = rng.standard_normal((40, D)).astype(np.float32)
    W = rng.standard_normal((D, C)).astype(np.float32)
    DP = kernels.padded_dim(D)
    Wt = kernels._to_t(W, DP)
    rows = rng.integers(0, 40, 40)
    P = kernels._aligned_f32(nb * C * LANES)  # the kernel's stated minimum
    for dlo, dhi in ((0, D), (16, D), (0, min(D, 32))):
        if dlo >= dhi:
            continue
        S = np.full((nb + 2, C), np.nan)
        kernels._scores_block(X, rows, 3, nb, Wt, DP, dlo, dhi, C, P, S, 1, rows[30:])
        expected = X[rows[3:3 + nb], dlo:dhi].astype(np.float64) @ W[dlo:dhi]
        assert np.isnan(S[0]).all() and np.isnan(S[nb + 1]).all()  # only S[o:o+nb] written
        np.testing.assert_allclose(S[1:nb + 1], expected, rtol=0, atol=1e-5 * np.sqrt(D) * 4)


@pytest.mark.parametrize("D", [5, 49, 600, 3073])
@pytest.mark.parametrize("C", [3, 7, 10])
@pytest.mark.parametrize("nb", [1, 3, 4, 6, 33])
def test_accum_block_matches_numpy(D, C, nb):
    rng = np.random.default_rng(D * 100 + C * 10 + nb)
    X = rng.standard_normal((40, D)).astype(np.float32)
    G = rng.standard_normal((nb, C)).astype(np.float32)
    brow = rng.integers(0, 40, nb)
    DP = kernels.padded_dim(D)
    for dlo, dhi in ((0, D), (16, D)):
        if dlo >= dhi:
            continue
        start = rng.standard_normal((C, DP)).astype(np.float32)
        acc = kernels._aligned_zeros(1, C * DP)[0]
        acc[:] = start.reshape(-1)
        kernels._accum_block(X, brow, nb, G, acc, DP, dlo, dhi, C, brow[::-1])
        got = acc.reshape(C, DP)
        expected = start.astype(np.float64)
        expected[:, dlo:dhi] += (X[brow, dlo:dhi].astype(np.float64).T @ G).T
        np.testing.assert_allclose(got[:, dlo:dhi], expected[:, dlo:dhi], rtol=0,
                                   atol=1e-5 * np.sqrt(nb) * 8)
        # outside the slice nothing moves, padding included
        assert np.array_equal(got[:, :dlo], start[:, :dlo])
        assert np.array_equal(got[:, dhi:], start[:, dhi:])


def test_accum_block_adds_rows_in_their_order_whatever_the_tiling(monkeypatch):
    # Every element gets its rows' FMAs in row order, so splitting D into other tiles or
    # a part's slice into pieces gives the same bits.
    rng = np.random.default_rng(1)
    D, C, nb = 3073, 10, 13
    X = rng.standard_normal((nb, D)).astype(np.float32)
    G = rng.standard_normal((nb, C)).astype(np.float32)
    brow = np.arange(nb)
    DP = kernels.padded_dim(D)
    whole = kernels._aligned_zeros(1, C * DP)[0]
    kernels._accum_block(X, brow, nb, G, whole, DP, 0, D, C, brow)
    pieces = kernels._aligned_zeros(1, C * DP)[0]
    for lo, hi in ((0, 400), (400, 2000), (2000, D)):  # not on tile edges
        kernels._accum_block(X, brow, nb, G, pieces, DP, lo, hi, C, brow[:1])
    assert np.array_equal(whole, pieces)


def _prefetch_sum(a):
    total = np.float32(0.0)
    for i in range(0, a.shape[0], L):
        vprefetch(a, i)
        total += vsum(vload(a, i))
    return total


def test_vprefetch_is_a_prefetch_to_l2_and_changes_nothing():
    fn = njit(nogil=True)(_prefetch_sum)  # not cached: a cached build has no assembly to show
    a = np.arange(4 * L, dtype=np.float32)
    before = a.copy()
    assert fn(a) == np.float32(a.sum())
    assert np.array_equal(a, before)
    asm = "".join(fn.inspect_asm().values())
    assert "prefetcht1" in asm  # locality 2: into L2, as the block kernels want


def test_prefetched_rows_never_change_the_bits():
    # The block kernels prefetch whichever rows they are handed (the next block's): any
    # choice gives the same scores and gradient, bit for bit.
    rng = np.random.default_rng(3)
    D, C, nb = 600, 10, 8
    X = rng.standard_normal((40, D)).astype(np.float32)
    W = rng.standard_normal((D, C)).astype(np.float32)
    G = rng.standard_normal((nb, C)).astype(np.float32)
    DP = kernels.padded_dim(D)
    Wt = kernels._to_t(W, DP)
    rows = rng.integers(0, 40, 40)
    P = kernels._aligned_f32(nb * C * LANES)
    results = []
    for nx in (rows[8:16], rows[39:], rows[:3]):
        S = np.empty((nb, C))
        kernels._scores_block(X, rows, 0, nb, Wt, DP, 0, D, C, P, S, 0, nx)
        acc = kernels._aligned_zeros(1, C * DP)[0]
        kernels._accum_block(X, rows, nb, G, acc, DP, 0, D, C, nx)
        results.append((S.copy(), acc.copy()))
    for S, acc in results[1:]:
        assert np.array_equal(S, results[0][0]) and np.array_equal(acc, results[0][1])


def test_next_rows_is_the_next_block_then_the_next_steps_rows():
    rows = np.arange(100, 120)
    after = np.arange(500, 530)
    B = kernels.BLOCK_ROWS
    assert list(kernels._next_rows(rows, 0, 20, after)) == list(range(100, 100 + B))
    assert list(kernels._next_rows(rows, 16, 20, after)) == [116, 117, 118, 119]  # not past hi
    assert list(kernels._next_rows(rows, 16, 18, after)) == [116, 117]
    assert list(kernels._next_rows(rows, 20, 20, after)) == list(range(500, 500 + B))
    assert list(kernels._next_rows(rows, 20, 20, after[:3])) == [500, 501, 502]
    assert list(kernels._next_rows(rows, 24, 20, after[:0])) == [119]  # never empty


def test_aligned_buffers_start_on_cache_lines():
    for n in (1, 16, 31040, 100_003):
        assert kernels._aligned_f32(n).ctypes.data % 64 == 0
        assert kernels._aligned_f32(n).shape == (n,)
    acc = kernels._aligned_zeros(3, 31040)
    assert acc.shape == (3, 31040) and not acc.any()
    assert all(acc[k].ctypes.data % 64 == 0 for k in range(3))
    W = np.ones((49, 10), np.float32)
    assert kernels._to_t(W, kernels.padded_dim(49)).ctypes.data % 64 == 0


_BLOCKS = """
import sys
import numpy as np
from engine import kernels, simd
rng = np.random.default_rng(0)
D, C, nb = 3073, 7, 6
X = rng.standard_normal((nb, D)).astype(np.float32)
W = rng.standard_normal((D, C)).astype(np.float32)
G = rng.standard_normal((nb, C)).astype(np.float32)
DP = kernels.padded_dim(D)
rows = np.arange(nb)
P = kernels._aligned_f32(nb * C * simd.LANES)
S = np.zeros((nb, C))
kernels._scores_block(X, rows, 0, nb, kernels._to_t(W, DP), DP, 0, D, C, P, S, 0, rows)
acc = kernels._aligned_zeros(1, C * DP)[0]
kernels._accum_block(X, rows, nb, G, acc, DP, 0, D, C, rows)
sys.stdout.write(f"{simd.WIDE} {S.tobytes().hex()} {acc.tobytes().hex()}")
"""


def _blocks_in_a_fresh_process(tmp_path, features: str | None) -> list[str]:
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / str(features is None)))
    env.pop("NUMBA_CPU_FEATURES", None)
    if features is not None:
        env["NUMBA_CPU_FEATURES"] = features
    done = subprocess.run([sys.executable, "-c", _BLOCKS], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_cpus_without_avx512_get_the_same_bits(tmp_path):
    """Without AVX-512 the kernels keep fewer vectors live (one row at a time) but add the
    same products in the same order: compile them that way in a fresh process, and compare
    with this CPU's build bit for bit."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    for name in list(features):
        if name.startswith(("avx512", "amx", "avx10")):
            features[name] = False
    narrow = _blocks_in_a_fresh_process(tmp_path, features.flatten())
    host = _blocks_in_a_fresh_process(tmp_path, None)
    assert narrow[0] == "False"
    assert narrow[1:] == host[1:]  # scores and gradient, every bit
