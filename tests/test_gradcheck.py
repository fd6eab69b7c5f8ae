"""The gradient check passes on correct gradients, fails on wrong ones, and reports kinks."""

from __future__ import annotations

import numpy as np
import pytest

from engine import gradcheck, reference


def _data(seed=0, N=200, D=49, C=10):
    rng = np.random.default_rng(seed)
    X = (30 * rng.standard_normal((N, D))).astype(np.float32)
    X[:, -1] = 1.0
    y = rng.integers(0, C, N).astype(np.int32)
    W = (1e-3 * rng.standard_normal((D, C))).astype(np.float32)
    return X, y, W


@pytest.mark.parametrize("loss", ["svm", "softmax"])
@pytest.mark.parametrize("reg", [0.0, 10.0])
def test_correct_gradients_pass(loss, reg):
    X, y, W = _data()
    report = gradcheck.check(X, y, W, reg, loss, num_coords=40, seed=1)
    assert report.passed, gradcheck.format_report(report)
    assert len(report.reference) == len(report.kernel) == 40
    assert report.worst_reference < 1e-6
    assert report.worst_kernel < gradcheck.KERNEL_TOL


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_wrong_gradients_fail(loss):
    X, y, W = _data()
    right = reference.LOSSES[loss]

    def forgot_reg(W, X, y, reg):
        loss_value, dW = right(W, X, y, 0.0)
        return loss_value, dW

    def slightly_scaled(W, X, y, reg):
        loss_value, dW = right(W, X, y, reg)
        return loss_value, dW * 1.001

    for wrong, reg in ((forgot_reg, 10.0), (slightly_scaled, 0.0)):
        report = gradcheck.check(X, y, W, reg, loss, num_coords=20, grad_fn=wrong,
                                 with_kernel=False)
        assert not report.passed
        assert "FAIL" in gradcheck.format_report(report)


def test_kink_is_reported_not_failed():
    # One row x = (1, 0, 1), label 0, W[0, 1] = -1: scores (0, -1), so class 1's margin
    # is exactly 0: any move of W[0, 0] or W[0, 1] crosses the hinge's kink.
    X = np.array([[1.0, 0.0, 1.0]], dtype=np.float32)
    y = np.array([0], dtype=np.int32)
    W = np.zeros((3, 2), dtype=np.float32)
    W[0, 1] = -1.0
    report = gradcheck.check(X, y, W, 0.0, "svm", num_coords=6)
    kinks = {c.index for c in report.reference if c.kink}
    assert kinks == {(0, 0), (0, 1), (2, 0), (2, 1)}
    assert report.passed
    assert "kink" in gradcheck.format_report(report)
    assert max(c.rel_error for c in report.reference if c.kink) > 0.1


def test_bad_arguments():
    X, y, W = _data()
    with pytest.raises(ValueError, match="unknown loss"):
        gradcheck.check(X, y, W, 0.0, "hinge")
    with pytest.raises(ValueError, match="must be"):
        gradcheck.check(X[:, :5], y, W, 0.0, "svm")


def test_rel_error():
    assert gradcheck.rel_error(0.0, 0.0) == 0.0
    assert gradcheck.rel_error(1.0, 1.0) == 0.0
    assert gradcheck.rel_error(1.0, -1.0) == 1.0
    assert gradcheck.rel_error(float("nan"), 1.0) == float("inf")
