"""Shared fixtures: small seeded datasets, built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile (or load from the cache) every kernel once, before the first test: a cold
    compile takes 20-40 s, longer than a UI test's bounded wait for training to start."""
    from engine import kernels

    kernels.warmup()


@pytest.fixture(scope="session")
def tiny():
    """CIFAR-shaped synthetic data, small enough for thousands of steps per second."""
    from engine.data import load_dataset

    return load_dataset("synthetic:1200")


@pytest.fixture(scope="session")
def blobs():
    """The 2-D blobs set: D = 3 with the bias column."""
    from engine.data import load_dataset

    return load_dataset("blobs")
