"""The numpy oracle: naive and vectorized agree, and both match numerical gradients."""

from __future__ import annotations

import numpy as np
import pytest

from engine import reference

LOSSES = {
    "svm": (reference.svm_loss_naive, reference.svm_loss_vectorized),
    "softmax": (reference.softmax_loss_naive, reference.softmax_loss_vectorized),
}


def _data(seed: int = 0, N: int = 40, D: int = 7, C: int = 4):
    """N rows of D dims (last one the bias 1.0), C classes, W at scale 0.5."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    X[:, -1] = 1.0
    y = rng.integers(0, C, N).astype(np.int32)
    W = 0.5 * rng.standard_normal((D, C))
    return W, X, y


def _numerical_grad(f, W, h=1e-5):
    grad = np.zeros_like(W)
    for index in np.ndindex(W.shape):
        old = W[index]
        W[index] = old + h
        plus = f(W)
        W[index] = old - h
        minus = f(W)
        W[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def _rel_error(a, n):
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-300)


@pytest.mark.parametrize("loss", ["svm", "softmax"])
@pytest.mark.parametrize("reg", [0.0, 1e-3, 5.0])
def test_naive_and_vectorized_agree(loss, reg):
    W, X, y = _data()
    naive, vectorized = LOSSES[loss]
    loss_n, grad_n = naive(W, X, y, reg)
    loss_v, grad_v = vectorized(W, X, y, reg)
    assert loss_v == pytest.approx(loss_n, rel=1e-12)
    np.testing.assert_allclose(grad_v, grad_n, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["svm", "softmax"])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_gradient_matches_numerical(loss, reg):
    W, X, y = _data(seed=1)
    if loss == "svm":  # keep every margin away from the hinge's kink (|margin| > 1e-3 >> h·|x|)
        scores = X @ W
        margins = scores - scores[np.arange(len(y)), y][:, None] + 1.0
        margins[np.arange(len(y)), y] = 1.0
        assert np.abs(margins).min() > 1e-3
    for fn in LOSSES[loss]:
        _, analytic = fn(W, X, y, reg)
        numerical = _numerical_grad(lambda w, fn=fn: fn(w, X, y, reg)[0], W.copy())
        assert _rel_error(analytic, numerical).max() < 1e-7


def test_reg_term_and_its_gradient():
    W, X, y = _data()
    for fn in (reference.svm_loss_vectorized, reference.softmax_loss_vectorized):
        loss0, grad0 = fn(W, X, y, 0.0)
        loss1, grad1 = fn(W, X, y, 2.0)
        assert loss1 - loss0 == pytest.approx(2.0 * np.sum(W * W))
        np.testing.assert_allclose(grad1 - grad0, 4.0 * W, atol=1e-12)


def test_softmax_survives_huge_scores():
    W, X, y = _data()
    loss, grad = reference.softmax_loss_vectorized(W * 1e4, X, y, 0.0)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_known_values():
    # W = 0: every score ties, SVM loss is C-1 (each wrong class costs the margin 1), and
    # softmax loss is log(C).
    W = np.zeros((5, 4))
    X = np.ones((3, 5))
    y = np.array([0, 1, 2], dtype=np.int32)
    assert reference.svm_loss_vectorized(W, X, y, 1.0)[0] == pytest.approx(3.0)
    assert reference.softmax_loss_vectorized(W, X, y, 1.0)[0] == pytest.approx(np.log(4))
