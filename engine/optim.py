"""The four optimizers of the lesson, each a run of steps in place on W.

Shapes: X (N, D) float32 rows (D incl. bias), y (N,) int32 labels, W (D, C) float32.
All randomness comes from the trainer's ``numpy.random.Generator``; every step draws its
own batch with ``rng.integers(0, N, size=B)`` (and, for the searches, its candidate right
after), so the random stream and the results do not depend on how a run is split into
chunks of steps.

Every optimizer writes, per step, the data loss and the reg loss ``reg * sum(W*W)``:

============  ======================================================  =====================
optimizer     one step                                                 loss evaluations
============  ======================================================  =====================
``sgd``       loss + gradient on a batch of B rows, ``W -= lr·dW``;    1 (+ its gradient)
              reports W before the update
``gd``        the same on all N rows (draws nothing)                   1 on N rows (+ grad)
``random``    candidate ``init_scale·randn(D, C)``; current W and the  2 on B rows, no grad
              candidate scored on the same batch; the candidate is
              kept if strictly better; reports the kept W
``local``     candidate ``W + sigma·randn(D, C)``, same rule           2 on B rows, no grad
============  ======================================================  =====================

A search also switches to the candidate when the current loss is NaN and the candidate's
is not, so a search can leave a non-finite W behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import kernels

OPTIMIZERS = ("sgd", "gd", "random", "local")
"""Optimizer names: minibatch SGD, full-batch GD, random search, random local search."""
SEARCH_CHUNK = 32
"""Random/local-search proposals drawn and scored per kernel call (their candidates take
SEARCH_CHUNK * D * C floats: 3.9 MB for CIFAR)."""

EVALS_PER_STEP = {"sgd": 1, "gd": 1, "random": 2, "local": 2}
"""Loss evaluations per step (sgd and gd also compute the gradient in the same pass)."""


@dataclass
class StepParams:
    """Settings of one chunk of steps (the trainer rebuilds it when a control changes)."""

    loss_kind: int = kernels.SVM
    """kernels.SVM or kernels.SOFTMAX."""
    lr: float = 1e-7
    """Learning rate of sgd and gd (CS231n's SVM value on 0-255 pixels)."""
    reg: float = 2.5e4
    """L2 strength λ (CS231n's SVM value)."""
    batch_size: int = 256
    """Rows per step for sgd and the two searches."""
    sigma: float = 1e-4
    """Step size of random local search (CS231n uses 0.0001)."""
    init_scale: float = 1e-4
    """Scale of random W's: random search candidates and the initial W."""


def init_weights(rng: np.random.Generator, D: int, C: int, scale: float) -> np.ndarray:
    """A random starting W: ``scale * standard_normal((D, C))``, float32, C-contiguous."""
    W = rng.standard_normal((D, C), dtype=np.float32)
    W *= np.float32(scale)
    return W


def _draw_batches(rng, N, B, n_steps, idx_buf):
    if idx_buf is None or idx_buf.ndim != 2 or idx_buf.shape[1] != B or idx_buf.shape[0] < n_steps:
        idx_buf = np.empty((n_steps, B), dtype=np.int64)
    idx = idx_buf[:n_steps]
    for s in range(n_steps):
        idx[s] = rng.integers(0, N, size=B)
    return idx


def _reg_loss(W: np.ndarray, reg: float) -> float:
    """reg * sum(W**2) in float64, without BLAS: numpy's BLAS (OpenBLAS) runs a dot of this
    size on its own worker threads, which then busy-wait for the next call for about 0.1 s
    each time, taking a core from the kernels (random search measured 1.9 ms a proposal
    with that spinner, 1.2 ms without)."""
    w = W.astype(np.float64).ravel()
    return float(reg) * float(np.sum(w * w))


def run_steps(optimizer: str, X: np.ndarray, y: np.ndarray, W: np.ndarray,
              rng: np.random.Generator, params: StepParams, n_steps: int,
              out_data: np.ndarray, out_reg: np.ndarray, idx_buf: np.ndarray | None = None
              ) -> None:
    """Run n_steps steps of an optimizer in place on W.

    Args:
        optimizer: one of OPTIMIZERS.
        X: (N, D) float32 rows. y: (N,) int32 labels. W: (D, C) float32, updated in place.
        rng: the trainer's generator (batches and candidates are drawn from it).
        params: loss kind, lr, reg, batch size, sigma, init_scale.
        n_steps: number of steps.
        out_data, out_reg: float64 arrays of length >= n_steps, receive each step's data
            loss and reg loss.
        idx_buf: optional reusable (>= n_steps, B) int64 buffer for the batch indices.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    if n_steps <= 0:
        return
    N = X.shape[0]
    B = int(params.batch_size)
    if optimizer != "gd" and not 1 <= B <= N:
        raise ValueError(f"batch size {B} must be between 1 and the {N} training rows")
    if optimizer == "gd":
        kernels.gd_steps(X, y, W, params.lr, params.reg, params.loss_kind, out_data, out_reg,
                         n_steps)
        return
    if optimizer == "sgd":
        idx = _draw_batches(rng, N, B, n_steps, idx_buf)
        kernels.sgd_steps(X, y, idx, W, params.lr, params.reg, params.loss_kind,
                          out_data, out_reg)
        return
    # Random / local search. A proposal draws its rows, then its candidate (random: a
    # fresh init_weights W; local: a step sigma * N(0, 1) from W); both are drawn here, in
    # that order, for up to SEARCH_CHUNK proposals at a time, and one kernel call scores
    # and accepts them in sequence (kernels.search_steps). reg * sum(W**2) of each
    # accepted W is computed here, with numpy, from the candidate the kernel leaves in
    # its slot.
    D, C = W.shape
    chunk = min(n_steps, SEARCH_CHUNK)
    rows = np.empty((chunk, B), dtype=np.int64)
    cands = np.empty((chunk, D, C), dtype=np.float32)
    accepted = np.zeros(chunk, dtype=np.uint8)
    scale = np.float32(params.init_scale if optimizer == "random" else params.sigma)
    reg_now = _reg_loss(W, params.reg)
    for s0 in range(0, n_steps, chunk):
        m = min(chunk, n_steps - s0)
        for s in range(m):
            rows[s] = rng.integers(0, N, size=B)
            rng.standard_normal((D, C), dtype=np.float32, out=cands[s])
            cands[s] *= scale
        kernels.search_steps(X, y, rows[:m], cands, W, optimizer == "local",
                             params.loss_kind, out_data[s0:s0 + m], accepted)
        for s in range(m):
            if accepted[s]:
                reg_now = _reg_loss(cands[s], params.reg)
            out_reg[s0 + s] = reg_now
