"""The plain-numpy oracle: SVM and softmax loss-and-gradient, naive and vectorized.

CS231n contract (assignment 1, ``linear_svm.py`` and ``softmax.py``): D dimensions (the
last one is the bias column of 1.0), C classes, minibatches of N rows.

- ``W``: (D, C) weights; ``X``: (N, D) rows of the batch; ``y``: (N,) labels in 0..C-1.
- Every function returns ``(loss, dW)``: the mean data loss over the N rows plus
  ``reg * sum(W * W)``, and its gradient (data gradient plus ``2 * reg * W``), shape (D, C).
- The SVM uses margin delta = 1; softmax subtracts each row's max score before ``exp``.

Everything is computed in float64 whatever the input dtype, so these are the numbers the
float32 Numba kernels (engine/kernels.py) are tested against. Slow on purpose: clarity first.
"""

from __future__ import annotations

import numpy as np

DELTA = 1.0
"""The SVM margin: a wrong class costs nothing once it scores DELTA below the right one."""


def _as64(W: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    return (
        np.asarray(W, dtype=np.float64),
        np.asarray(X, dtype=np.float64),
        np.asarray(y, dtype=np.int64),
    )


def svm_loss_naive(W: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float):
    """Multiclass SVM (hinge) loss with explicit loops.

    Args:
        W: (D, C) weights.
        X: (N, D) minibatch rows.
        y: (N,) labels, ``0 <= y[i] < C``.
        reg: L2 strength λ.

    Returns:
        ``(loss, dW)``: mean hinge loss plus ``reg * sum(W*W)``; dW has W's shape, float64.
    """
    W, X, y = _as64(W, X, y)
    num_train, num_classes = X.shape[0], W.shape[1]
    dW = np.zeros_like(W)
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        correct = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct + DELTA
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * np.sum(W * W)
    dW += 2 * reg * W
    return float(loss), dW


def svm_loss_vectorized(W: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float):
    """Multiclass SVM loss, vectorized; same inputs and outputs as :func:`svm_loss_naive`."""
    W, X, y = _as64(W, X, y)
    num_train = X.shape[0]
    rows = np.arange(num_train)
    scores = X @ W  # (N, C)
    margins = scores - scores[rows, y][:, None] + DELTA
    margins[rows, y] = 0.0
    positive = margins > 0
    loss = np.sum(margins[positive]) / num_train + reg * np.sum(W * W)
    coeff = positive.astype(np.float64)  # dL/dscores, before averaging
    coeff[rows, y] = -coeff.sum(axis=1)
    dW = X.T @ coeff / num_train + 2 * reg * W
    return float(loss), dW


def softmax_loss_naive(W: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float):
    """Softmax (cross-entropy) loss with explicit loops.

    Args:
        W: (D, C) weights.
        X: (N, D) minibatch rows.
        y: (N,) labels, ``0 <= y[i] < C``.
        reg: L2 strength λ.

    Returns:
        ``(loss, dW)``: mean cross-entropy plus ``reg * sum(W*W)``; dW has W's shape, float64.
    """
    W, X, y = _as64(W, X, y)
    num_train, num_classes = X.shape[0], W.shape[1]
    dW = np.zeros_like(W)
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        scores = scores - np.max(scores)  # numeric stability: exp never overflows
        exp = np.exp(scores)
        total = np.sum(exp)
        loss += np.log(total) - scores[y[i]]
        for j in range(num_classes):
            p = exp[j] / total
            dW[:, j] += (p - (j == y[i])) * X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * np.sum(W * W)
    dW += 2 * reg * W
    return float(loss), dW


def softmax_loss_vectorized(W: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float):
    """Softmax loss, vectorized; same inputs and outputs as :func:`softmax_loss_naive`."""
    W, X, y = _as64(W, X, y)
    num_train = X.shape[0]
    rows = np.arange(num_train)
    scores = X @ W
    scores -= scores.max(axis=1, keepdims=True)
    log_total = np.log(np.exp(scores).sum(axis=1))
    loss = np.sum(log_total - scores[rows, y]) / num_train + reg * np.sum(W * W)
    probs = np.exp(scores - log_total[:, None])
    probs[rows, y] -= 1.0
    dW = X.T @ probs / num_train + 2 * reg * W
    return float(loss), dW


LOSSES = {"svm": svm_loss_vectorized, "softmax": softmax_loss_vectorized}
"""Vectorized loss-and-gradient by loss name."""
