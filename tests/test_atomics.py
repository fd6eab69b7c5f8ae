"""The LLVM atomics the step kernel's team is built on (engine/atomics.py)."""

from __future__ import annotations

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


@njit(cache=True, nogil=True)
def _single(a):
    store_release(a, 1, 5)
    old = fetch_add(a, 1, 3)
    won = compare_exchange(a, 1, 8, 100)
    lost = compare_exchange(a, 1, 8, 200)
    pause()
    sleep_us(1)
    return old, won, lost, load_acquire(a, 1)


@njit(cache=True, nogil=True, parallel=True)
def _count(a, n):
    for _t in prange(4):
        for _ in range(n):
            fetch_add(a, 0, 1)
            while True:  # an increment by compare-and-swap
                v = load_acquire(a, 1)
                if compare_exchange(a, 1, v, v + 2):
                    break
    return load_acquire(a, 0), load_acquire(a, 1)


def test_each_operation_does_what_it_says():
    a = np.zeros(3, np.int64)
    assert _single(a) == (5, True, False, 100)
    assert a.tolist() == [0, 100, 0]  # only the slot asked for


def test_no_increment_is_lost_between_threads():
    a = np.zeros(2, np.int64)
    assert _count(a, 20000) == (80000, 160000)
