"""Numerical vs analytic gradient on sampled coordinates (CS231n ``gradient_check.py``).

The numerical gradient is a centred difference ``(L(W+h) - L(W-h)) / 2h`` of the float64
reference loss, at sampled coordinates (d, c) of W (D dims, C classes). Two analytic
gradients are compared with it, by relative error ``|a - n| / (|a| + |n|)``:

- ``reference``: engine/reference.py's vectorized gradient, in float64. It must agree to
  ``REFERENCE_TOL`` = 1e-5 (in practice about 1e-9).
- ``kernel``: the Numba kernel's gradient (``kernels.loss_and_grad``), float32 data and
  weights with float32 score and gradient accumulation. It is held to ``KERNEL_TOL`` =
  1e-4: float32 carries about 7 significant digits, and a gradient coordinate is a sum of
  N·(D+1) products whose terms partly cancel, so a correct float32 gradient is typically
  1e-7..1e-6 off in relative terms and up to ~1e-5 on a coordinate that nearly cancels.
  A wrong gradient (a missing factor, sign or term) is off by 1e-2 or more.

Both are evaluated at the same point: W is rounded to float32 first, so the float32 kernel
and the float64 reference see exactly the same weights.

For the SVM, a coordinate whose difference straddles a kink of the hinge (a margin
``s_j - s_y + 1`` of some row changes sign between W-h and W+h) has no meaningful
numerical derivative: it is reported as ``kink`` and not counted as a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine import kernels, reference

REFERENCE_TOL = 1e-5
"""Largest relative error accepted for the float64 reference gradient."""
KERNEL_TOL = 1e-4
"""Largest relative error accepted for the float32 kernel gradient (see module docstring)."""

GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray, float], tuple[float, np.ndarray]]
"""(W, X, y, reg) -> (loss, dW), the reference.py contract."""


@dataclass(frozen=True)
class CoordCheck:
    """One sampled coordinate of W."""

    index: tuple[int, int]
    """(d, c): row (dimension) and column (class) of W."""
    analytic: float
    numerical: float
    rel_error: float
    kink: bool
    """The centred difference straddles a hinge kink (SVM only): not a failure."""


@dataclass
class GradcheckReport:
    """Result of :func:`check`: the sampled coordinates for each analytic gradient."""

    loss: str
    """"svm" or "softmax"."""
    reg: float
    h: float
    """Step of the centred difference."""
    rows: int
    """Rows of X the losses average over."""
    reference: list[CoordCheck] = field(default_factory=list)
    """The float64 reference (or the supplied grad_fn) against the numerical gradient."""
    kernel: list[CoordCheck] = field(default_factory=list)
    """The float32 Numba kernel against the numerical gradient (empty if skipped)."""

    @staticmethod
    def _worst(checks: list[CoordCheck]) -> float:
        errors = [c.rel_error for c in checks if not c.kink]
        return max(errors) if errors else 0.0

    @property
    def worst_reference(self) -> float:
        """Largest non-kink relative error of the reference gradient."""
        return self._worst(self.reference)

    @property
    def worst_kernel(self) -> float:
        """Largest non-kink relative error of the kernel gradient."""
        return self._worst(self.kernel)

    @property
    def kinks(self) -> int:
        """Number of sampled coordinates at a kink."""
        return sum(c.kink for c in self.reference)

    @property
    def passed(self) -> bool:
        """All non-kink errors under REFERENCE_TOL (reference) and KERNEL_TOL (kernel)."""
        return self.worst_reference < REFERENCE_TOL and self.worst_kernel < KERNEL_TOL


def rel_error(a: float, n: float) -> float:
    """CS231n relative error ``|a - n| / (|a| + |n|)``; 0 when both are 0, NaN stays NaN."""
    denom = abs(a) + abs(n)
    if denom == 0.0:
        return 0.0
    err = abs(a - n) / denom
    return float("inf") if err != err else err


def _straddles_kink(scores: np.ndarray, X: np.ndarray, y: np.ndarray, d: int, c: int,
                    h: float) -> bool:
    """Does moving W[d, c] by ±h flip the sign of some SVM margin (j != y_i)?"""
    rows = np.arange(len(y))
    results = []
    for step in (h, -h):
        s = scores.copy()
        s[:, c] += step * X[:, d]
        margins = s - s[rows, y][:, None] + reference.DELTA
        margins[rows, y] = -1.0  # the correct class never counts
        results.append(margins > 0)
    return bool(np.any(results[0] != results[1]))


def check(X: np.ndarray, y: np.ndarray, W: np.ndarray, reg: float, loss: str,
          num_coords: int = 20, h: float = 1e-5, seed: int = 0,
          grad_fn: GradFn | None = None, with_kernel: bool = True) -> GradcheckReport:
    """Compare analytic gradients with the float64 numerical one on sampled coordinates.

    Args:
        X: (N, D) rows (cast to float32 for the kernel, float64 for the reference).
        y: (N,) int labels in 0..C-1.
        W: (D, C) weights, rounded to float32 before anything is evaluated.
        reg: L2 strength λ.
        loss: "svm" or "softmax".
        num_coords: coordinates sampled (without replacement when possible).
        h: step of the centred difference.
        seed: seed of the coordinate sampling.
        grad_fn: analytic (W, X, y, reg) -> (loss, dW) to check instead of reference.py's.
        with_kernel: also check the Numba kernel's gradient.

    Returns:
        A GradcheckReport; ``report.passed`` says whether every non-kink error is small.
    """
    if loss not in reference.LOSSES:
        raise ValueError(f"unknown loss {loss!r} (choose svm or softmax)")
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    y32 = np.ascontiguousarray(y, dtype=np.int32)
    W32 = np.ascontiguousarray(W, dtype=np.float32)
    X64 = X32.astype(np.float64)
    W64 = W32.astype(np.float64)
    D, C = W64.shape
    if X64.ndim != 2 or X64.shape[1] != D or y32.shape != (X64.shape[0],):
        raise ValueError(f"gradcheck: X must be (N, {D}) and y (N,) to match W {W64.shape}")
    loss_fn = reference.LOSSES[loss]
    _, analytic = (grad_fn or loss_fn)(W64.copy(), X64, y32, reg)
    kernel_grad = None
    if with_kernel:
        kernel_grad = np.empty_like(W32)
        idx = np.arange(X32.shape[0], dtype=np.int64)
        kernels.loss_and_grad(X32, y32, idx, W32, reg, kernels.LOSS_KINDS[loss], kernel_grad)

    rng = np.random.default_rng(seed)
    flat = rng.choice(D * C, size=min(num_coords, D * C), replace=num_coords > D * C)
    scores = X64 @ W64
    report = GradcheckReport(loss=loss, reg=float(reg), h=float(h), rows=X64.shape[0])
    for k in flat:
        d, c = divmod(int(k), C)
        old = W64[d, c]
        W64[d, c] = old + h
        plus = loss_fn(W64, X64, y32, reg)[0]
        W64[d, c] = old - h
        minus = loss_fn(W64, X64, y32, reg)[0]
        W64[d, c] = old
        numerical = (plus - minus) / (2 * h)
        kink = loss == "svm" and _straddles_kink(scores, X64, y32, d, c, h)
        a = float(analytic[d, c])
        report.reference.append(CoordCheck((d, c), a, numerical, rel_error(a, numerical), kink))
        if kernel_grad is not None:
            a = float(kernel_grad[d, c])
            report.kernel.append(CoordCheck((d, c), a, numerical, rel_error(a, numerical), kink))
    return report


def format_report(report: GradcheckReport) -> str:
    """A readable table of the sampled coordinates and a verdict line."""
    lines = [
        f"gradient check: {report.loss} loss, reg {report.reg:g}, h {report.h:g}, "
        f"{report.rows} rows, {len(report.reference)} coordinates",
        f"{'(d, c)':>12} {'numerical':>13} {'reference':>13} {'rel err':>9}"
        + (f" {'kernel f32':>13} {'rel err':>9}" if report.kernel else "") + "  note",
    ]
    for k, ref in enumerate(report.reference):
        line = (f"{str(ref.index):>12} {ref.numerical:13.6e} {ref.analytic:13.6e} "
                f"{ref.rel_error:9.2e}")
        note = "kink (not counted)" if ref.kink else ""
        if report.kernel:
            ker = report.kernel[k]
            line += f" {ker.analytic:13.6e} {ker.rel_error:9.2e}"
            if not ker.kink and ker.rel_error >= KERNEL_TOL:
                note = "KERNEL FAIL"
        if not ref.kink and ref.rel_error >= REFERENCE_TOL:
            note = "FAIL" if not note else note + ", FAIL"
        lines.append(line + ("  " + note if note else ""))
    verdict = "PASS" if report.passed else "FAIL"
    summary = (f"{verdict}: worst reference rel error {report.worst_reference:.2e} "
               f"(limit {REFERENCE_TOL:g})")
    if report.kernel:
        summary += f", worst kernel {report.worst_kernel:.2e} (limit {KERNEL_TOL:g}, float32)"
    if report.kinks:
        summary += f", {report.kinks} at a kink"
    lines.append(summary)
    return "\n".join(lines)
