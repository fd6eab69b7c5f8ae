"""Datasets: the built-in sets, CIFAR-10, MNIST and npz files, preprocessed like CS231n.

Every loader ends in the same shape (N rows, D dims incl. bias, C classes):

- ``X_*``: float32, (N, D), each row (of 16 floats or more) starting on a 64-byte cache line
  (a view of a buffer whose rows are padded to a multiple of 16 floats:
  :func:`aligned_rows`); pixels as float32 on their 0-255 scale with the mean *training*
  image subtracted, and a last column of 1.0 (the bias trick).
- ``y_*``: int32, (N,), labels 0..C-1.
- The validation set is split off the end of the training set (CS231n: 49,000 / 1,000 for
  CIFAR-10); the test set is kept apart and only evaluated when asked.

Specs: ``synthetic`` (default), ``synthetic:N``, ``spiral``, ``blobs``, ``cifar10:DIR``,
``mnist:DIR``, ``npz:FILE``. Files are never downloaded. Pickles are read with a restricted
unpickler that can rebuild dicts, lists, strings and numpy arrays and nothing else.

Raw pixels go straight into one preallocated float32 array per split (no intermediate float
copies), and the fingerprint hashes the raw content as it streams past, so two copies of
the same data (even CIFAR's python and binary versions) have the same fingerprint.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[float, str], None]

SYNTHETIC_SEED = 231
"""The data seed of ``synthetic``: fixed, so a run's ``--seed`` never changes the data."""
SYNTHETIC_SIZE = 50_000
"""Training images (train + validation) in ``synthetic``, as in CIFAR-10."""
MAX_SYNTHETIC = 200_000
"""Largest ``synthetic:N`` accepted (about 2.5 GB of float32)."""
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
VALID_SPECS = "synthetic, synthetic:N, spiral, blobs, cifar10:DIR, mnist:DIR, npz:FILE"


class DatasetError(Exception):
    """A dataset cannot be used; ``str(e)`` is one line naming the file and what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity
class Dataset:
    """A preprocessed dataset: N rows, D dims incl. the bias column, C classes."""

    spec: str  # canonical spec, e.g. "synthetic", "cifar10:/abs/cifar-10-batches-py"
    X_train: np.ndarray  # (N, D) float32, mean-subtracted, last column 1.0
    y_train: np.ndarray  # (N,) int32 in 0..C-1
    X_val: np.ndarray  # (N_val, D) float32, same preprocessing as X_train
    y_val: np.ndarray  # (N_val,) int32
    X_test: np.ndarray | None  # (N_test, D) float32 or None when the source has no test set
    y_test: np.ndarray | None  # (N_test,) int32 or None
    class_names: tuple[str, ...]  # C names, index = label
    image_shape: tuple[int, int, int] | None  # (H, W, channels); None for 2-D point sets
    mean: np.ndarray  # (D-1,) float32 mean training image that was subtracted
    fingerprint: str  # sha256 hex of the raw content, labels, shapes and split
    defaults: dict  # suggested lr (per loss), reg, batch_size, sigma, init_scale

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        """D, including the bias column."""
        return int(self.X_train.shape[1])

    @property
    def num_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.X_val.shape[0])

    @property
    def num_test(self) -> int:
        return 0 if self.X_test is None else int(self.X_test.shape[0])

    def describe(self) -> dict[str, Any]:
        """Sizes and identity for a recording header (plain JSON types)."""
        return {
            "spec": self.spec, "num_train": self.num_train, "num_val": self.num_val,
            "num_test": self.num_test, "dim": self.dim, "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value."""

    kind: str  # synthetic | spiral | blobs | cifar10 | mnist | npz
    count: int | None = None  # synthetic:N -> N training images (train + val)
    path: Path | None = None  # absolute, ~ expanded, for cifar10 / mnist / npz

    @property
    def text(self) -> str:
        """The canonical spec string."""
        if self.path is not None:
            return f"{self.kind}:{self.path}"
        if self.count is not None:
            return f"{self.kind}:{self.count}"
        return self.kind


def parse_spec(spec: str | DataSpec) -> DataSpec:
    """Validate a dataset spec's syntax (files are only checked when loading).

    Raises:
        DatasetError: unknown name or bad argument; the message lists the valid forms.
    """
    if isinstance(spec, DataSpec):
        return spec
    text = str(spec).strip()
    kind, sep, arg = text.partition(":")
    kind = kind.lower()
    if kind in ("synthetic", "spiral", "blobs"):
        if not sep:
            return DataSpec(kind)
        if kind != "synthetic":
            raise DatasetError(f"dataset {text!r}: {kind} takes no argument; use just {kind!r}")
        try:
            n = int(arg.replace("_", ""))
        except ValueError:
            n = -1
        if not 20 <= n <= MAX_SYNTHETIC:
            raise DatasetError(f"dataset {text!r}: N in synthetic:N must be a whole number "
                               f"from 20 to {MAX_SYNTHETIC}, e.g. synthetic:5000")
        return DataSpec(kind, count=n)
    if kind in ("cifar10", "mnist", "npz"):
        if not arg.strip():
            what = "FILE" if kind == "npz" else "DIR"
            raise DatasetError(f"dataset {text!r}: give a path, e.g. {kind}:{what}")
        return DataSpec(kind, path=Path(os.path.expanduser(arg.strip())).resolve())
    raise DatasetError(f"unknown dataset {text!r}: use one of {VALID_SPECS}")


def load_dataset(spec: str | DataSpec = "synthetic", *, num_val: int | None = None,
                 progress: Progress | None = None) -> Dataset:
    """Load (or generate) a dataset and preprocess it.

    Args:
        spec: see the module docstring; ``~`` in paths expands.
        num_val: validation rows split off the end of the training set (ignored by npz
            files that bring ``X_val``); None: min(1000, N // 10).
        progress: called as ``progress(fraction, message)`` while loading.

    Returns:
        The Dataset.

    Raises:
        DatasetError: one line naming the file and what is wrong.
    """
    s = parse_spec(spec)
    report = progress or (lambda f, m: None)
    if s.kind == "synthetic":
        return _synthetic(s, num_val, report)
    if s.kind in ("spiral", "blobs"):
        return _points(s, num_val)
    from engine import readers  # readers imports this module

    if s.kind == "cifar10":
        return readers.load_cifar10(s, num_val, report)
    if s.kind == "mnist":
        return readers.load_mnist(s, num_val, report)
    return readers.load_npz(s, num_val, report)


# -- preprocessing --------------------------------------------------------------------------


def _split_sizes(total: int, num_val: int | None, where: str) -> tuple[int, int]:
    """(num_train, num_val) for ``total`` training rows."""
    if total < 2:
        raise DatasetError(f"{where}: the dataset is empty (needs at least 2 training rows)")
    if num_val is None:
        num_val = min(1000, max(1, total // 10))
    if not 1 <= num_val < total:
        raise DatasetError(f"{where}: num_val={num_val} must be from 1 to {total - 1} "
                           f"(the training set has {total} rows)")
    return total - num_val, num_val


_ROWS = 256
"""Rows converted per block: a block of the float32 destination (about 3 MB) stays in cache."""


def aligned_rows(n: int, d: int) -> np.ndarray:
    """An uninitialised float32 (n, d) array whose rows each start on a 64-byte cache line.

    It is a view of the first d columns of an (n, d rounded up to 16) buffer; the padding
    columns are zero. Rows of 3073 floats packed end to end start on a line only every
    16th row, and every 64-byte vector load the kernels make in the others spans two lines:
    measured on a Xeon with AVX-512, aligned rows made SGD at B=256 about 10% faster and a
    full-batch GD step 7-10%. The kernels take any float32 X whose rows are contiguous.
    Rows of fewer than 16 floats have no whole vector to align: they stay packed (the 2-D
    sets would otherwise take 5x their memory)."""
    if d < 16:
        return np.empty((n, d), dtype=np.float32)
    stride = (d + 15) // 16 * 16
    buf = np.empty(n * stride + 16, dtype=np.float32)
    off = (-buf.ctypes.data % 64) // 4
    full = buf[off:off + n * stride].reshape(n, stride)
    full[:, d:] = 0.0
    return full[:, :d]


class _Builder:
    """Preallocated float32 splits that raw blocks are written into, hashed on the way.

    Rows of the "training stream" (train then validation) arrive in order through ``put``;
    rows ``>= num_train`` land in the validation array. ``chw`` blocks of
    (n, C*H*W) are reordered to the (H, W, C) row layout while converting.
    """

    def __init__(self, num_train: int, num_val: int, num_test: int, d: int,
                 image_shape: tuple[int, int, int] | None, chw: bool = False) -> None:
        self.d, self.image_shape, self.chw = d, image_shape, chw
        self.X = [aligned_rows(n, d + 1) for n in (num_train, num_val)]
        self.y = [np.empty(n, np.int32) for n in (num_train, num_val)]
        self.X_test = aligned_rows(num_test, d + 1) if num_test else None
        self.y_test = np.empty(num_test, np.int32) if num_test else None
        self.sum = np.zeros(d, np.float64)  # column sums of the training rows written so far
        self.hash = hashlib.sha256(b"descent-data-v1")
        self.hash.update(repr((num_train, num_val, num_test, d, image_shape)).encode())

    def _write(self, X: np.ndarray, y: np.ndarray, at: int, block: np.ndarray,
               labels: np.ndarray) -> None:
        n, d = block.shape[0], self.d
        c = self.image_shape[2] if self.chw and self.image_shape is not None else 1
        plane = d // c
        for a in range(0, n, _ROWS):  # a few hundred rows at a time stay in cache
            src = block[a:a + _ROWS]
            dst = X[at + a:at + a + src.shape[0], :d]
            if c == 1:
                dst[...] = src.reshape(src.shape[0], d)
            for k in range(c if c > 1 else 0):  # channel planes -> interleaved (H, W, C)
                dst[:, k::c] = src[:, k * plane:(k + 1) * plane]
            if X is self.X[0]:
                self.sum += dst.sum(axis=0, dtype=np.float64)
        y[at:at + n] = labels

    def put(self, start: int, block: np.ndarray, labels: np.ndarray) -> None:
        """Write training-stream rows ``start .. start+n`` (raw pixels, any real dtype)."""
        self._hash(block, labels)
        n_tr, n = self.X[0].shape[0], block.shape[0]
        cut = min(max(n_tr - start, 0), n)
        if cut:
            self._write(self.X[0], self.y[0], start, block[:cut], labels[:cut])
        if cut < n:
            self._write(self.X[1], self.y[1], start + cut - n_tr, block[cut:], labels[cut:])

    def put_test(self, start: int, block: np.ndarray, labels: np.ndarray) -> None:
        self.hash.update(b"test")
        self._hash(block, labels)
        assert self.X_test is not None and self.y_test is not None
        self._write(self.X_test, self.y_test, start, block, labels)

    def _hash(self, block: np.ndarray, labels: np.ndarray) -> None:
        self.hash.update(block.dtype.str.encode())
        self.hash.update(np.ascontiguousarray(block).data)
        self.hash.update(np.ascontiguousarray(labels, dtype="<i4").tobytes())

    def finish(self, spec: str, class_names: tuple[str, ...], report: Progress,
               defaults: dict | None = None) -> Dataset:
        """Subtract the mean training image, set the bias column, freeze into a Dataset."""
        report(0.92, "subtracting the mean image")
        d = self.d
        mean = (self.sum / max(1, self.X[0].shape[0])).astype(np.float32)
        for X in (*self.X, self.X_test):
            if X is None:
                continue
            for a in range(0, X.shape[0], _ROWS):
                X[a:a + _ROWS, :d] -= mean
            X[:, d] = 1.0
        self.hash.update(repr(class_names).encode())
        report(1.0, "ready")
        return Dataset(
            spec=spec, X_train=self.X[0], y_train=self.y[0], X_val=self.X[1], y_val=self.y[1],
            X_test=self.X_test, y_test=self.y_test, class_names=class_names,
            image_shape=self.image_shape, mean=mean, fingerprint=self.hash.hexdigest(),
            defaults=defaults if defaults is not None else _image_defaults(self.X[0]),
        )


def _check_labels(labels: Any, n: int, k: int, path: Path) -> np.ndarray:
    """Labels as (n,) int32 in 0..k-1, or a DatasetError naming ``path``."""
    try:
        y = np.asarray(labels)
    except Exception:  # noqa: BLE001
        y = np.asarray([])
    if y.shape != (n,) or not (y.dtype.kind in "iu" or y.size == 0):
        raise DatasetError(f"{path}: labels have shape {y.shape} (dtype {y.dtype}), expected "
                           f"{n} whole numbers; the file is corrupt")
    if n and (y.min() < 0 or y.max() >= k):
        raise DatasetError(f"{path}: label {int(y.max() if y.max() >= k else y.min())} is out "
                           f"of range 0..{k - 1}; the file is corrupt")
    return y.astype(np.int32)


def _nice(x: float) -> float:
    """Round to one of 1, 2, 2.5, 5 times a power of ten (numbers a person can type)."""
    e = math.floor(math.log10(x))
    m = x / 10**e
    m = min((1.0, 2.0, 2.5, 5.0, 10.0), key=lambda c: abs(math.log(m / c)))
    return float(f"{m * 10**e:.3g}")


def _image_defaults(X: np.ndarray) -> dict:
    """Hyperparameters scaled by the mean squared row norm ``ms`` of the training data.

    Tuned on ``synthetic`` (ms ≈ 1.2e7, like CIFAR-10): softmax lr 5e-7 and SVM lr 1e-7 at
    λ 2.5e3, initial W with std 1e-5 (softmax loss starts at ln 10 ≈ 2.30), local-search
    step 5e-6 (small enough that λ·ΣW² does not swamp the search); lr ×100 diverges.
    """
    rows = X[:: max(1, X.shape[0] // 2000)]
    ms = float(np.mean(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))) or 1.0
    k = 1.2e7 / ms
    return {"lr": {"svm": _nice(1e-7 * k), "softmax": _nice(5e-7 * k)},
            "reg": _nice(2.5e3 / k), "batch_size": 256,
            "init_scale": _nice(1e-5 * math.sqrt(k)), "sigma": _nice(5e-6 * math.sqrt(k))}


# -- built-in data -------------------------------------------------------------------------

# Synthetic images: each class has _MODES smooth colour templates (low-frequency cosine
# patterns, like CIFAR's dominant structure) that share a class colour cast; an image is a
# randomly scaled template of its class, plus part of another class's template
# (ambiguity), plus smooth nuisance structure, a brightness offset and pixel noise,
# clipped and rounded to 0..255, and 12% of labels are random. A linear classifier
# reaches about 40-50% (it cannot model all of a class's modes); the shared colour casts
# make random directions correlate with the classes, so random search beats chance.
_FREQS = 6  # cosine frequencies per axis in the basis
_MODES = 4  # templates per class
_CLASS_AMP = 16.0  # pixel std of the class templates (before frequency weighting)
_NUISANCE = 24.0  # pixel std of the per-image smooth nuisance
_SHARED_AMP = 30.0  # pixel std of each class's shared component (before weighting)
_SHARED_EXP = 3.0  # its frequency weighting: concentrated in the lowest frequencies
_PIXEL_NOISE = 18.0  # pixel std of the iid pixel noise
_AMBIGUITY = 1.0  # up to this fraction of another class's template is mixed in
_FLIP = 0.12  # fraction of labels replaced by a random class
_CHUNK = 1024  # images generated per block
_SYNTH_NAMES = ("sky", "leaf", "sand", "rust", "ice", "moss", "dusk", "coral", "ash", "plum")


def _synthetic_parts(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The fixed ingredients: cosines (F, 32), colour axes (3, 3), amplitudes (F, F, 3),
    class templates (10, M, F, F, 3) and a 1-D pool of pixel noise."""
    xs = (np.arange(32) + 0.5) / 32
    cos = np.cos(np.pi * np.outer(np.arange(_FREQS), xs))
    cos /= np.sqrt((cos**2).mean(axis=1, keepdims=True))  # unit RMS: coefficient = pixel std
    col = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], np.float64)  # luminance, 2 colours
    col *= np.sqrt(3) / np.linalg.norm(col, axis=1, keepdims=True)
    u, v, c = np.meshgrid(np.arange(_FREQS), np.arange(_FREQS), np.arange(3), indexing="ij")
    amp = np.array([1.0, 0.6, 0.35])[c] / (1.0 + u + v)  # 1/f spectrum, colour weaker
    templates = rng.standard_normal((10, _MODES, *amp.shape)) * amp**1.5 * _CLASS_AMP
    shared = rng.standard_normal((10, 1, *amp.shape)) * amp**_SHARED_EXP * _SHARED_AMP
    templates += shared  # what a class's modes have in common (mostly its overall colour)
    pool = rng.standard_normal(3072 * (_CHUNK + 1), dtype=np.float32) * np.float32(_PIXEL_NOISE)
    return (cos.astype(np.float32), col.astype(np.float32), amp, templates, pool)


def _synthetic_block(rng: np.random.Generator, n: int,
                     parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """n images as (n, 3072) uint8 rows in R,G,B plane order and (n,) int32 labels.

    The basis is separable (colour x cosine(y) x cosine(x)), so an image costs three small
    matrix products instead of one (K, 3072) product.
    """
    cos, col, amp, templates, pool = parts
    f = _FREQS
    y = rng.integers(0, 10, n)
    other = rng.integers(0, 10, n)
    mode, mode2 = rng.integers(0, _MODES, n), rng.integers(0, _MODES, n)
    mix = rng.uniform(0.0, _AMBIGUITY, n)[:, None, None, None]
    gain = rng.uniform(0.6, 1.4, n)[:, None, None, None]
    coef = gain * (templates[y, mode] + mix * templates[other, mode2])
    coef += rng.standard_normal(coef.shape, dtype=np.float32) * (amp * _NUISANCE)  # (n, u, v, c)
    cz = (coef.astype(np.float32).reshape(-1, 3) @ col).reshape(n, f, f, 3)
    t1 = np.matmul(cos.T, cz.transpose(0, 3, 1, 2))  # (n, z, y, v)
    img = np.matmul(t1, cos).reshape(n, 3072)  # (n, z, y, x): planes, like CIFAR's files
    start = int(rng.integers(0, pool.size - n * 3072 + 1))
    img += pool[start:start + n * 3072].reshape(n, 3072)
    img += rng.normal(120.0, 20.0, n).astype(np.float32)[:, None]
    np.clip(img, 0.0, 255.0, out=img)
    np.rint(img, out=img)
    flip = rng.random(n) < _FLIP
    y = np.where(flip, rng.integers(0, 10, n), y)
    return img.astype(np.uint8), y.astype(np.int32)


def _synthetic(s: DataSpec, num_val: int | None, report: Progress) -> Dataset:
    total = s.count or SYNTHETIC_SIZE
    n_train, n_val = _split_sizes(total, num_val, s.text)
    n_test = max(1, total // 5)
    parts = _synthetic_parts(np.random.default_rng(SYNTHETIC_SEED))
    b = _Builder(n_train, n_val, n_test, 3072, (32, 32, 3), chw=True)
    jobs = [(0, a) for a in range(0, total, _CHUNK)] + [(1, a) for a in range(0, n_test, _CHUNK)]
    for i, (split, a) in enumerate(jobs):
        # One generator per block: synthetic:N is a prefix of synthetic.
        rng = np.random.default_rng([SYNTHETIC_SEED, split, a])
        n = min(_CHUNK, (total if split == 0 else n_test) - a)
        img, y = _synthetic_block(rng, _CHUNK, parts)  # always whole blocks: same draws
        (b.put if split == 0 else b.put_test)(a, img[:n], y[:n])
        if i % 8 == 0:
            report(0.9 * i / len(jobs), "generating synthetic images")
    return b.finish(s.text, _SYNTH_NAMES, report)


def _points(s: DataSpec, num_val: int | None) -> Dataset:
    """The 2-D sets: CS231n's 3-arm spiral, or 4 overlapping Gaussian blobs."""
    rng = np.random.default_rng([SYNTHETIC_SEED, 7])
    if s.kind == "spiral":
        per, k = 600, 3
        t = np.concatenate([np.linspace(0.0, 1.0, per)] * k)
        y = np.repeat(np.arange(k), per)
        theta = y * 4.0 + t * 4.0 + rng.standard_normal(t.size) * 0.2
        pts = np.stack([t * np.sin(theta), t * np.cos(theta)], axis=1)
        names: tuple[str, ...] = ("arm 0", "arm 1", "arm 2")
    else:
        per, k = 500, 4
        y = np.repeat(np.arange(k), per)
        centres = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]]) + 1.0
        pts = centres[y] + rng.standard_normal((y.size, 2)) * 1.1
        names = ("east", "north", "west", "south")
    order = rng.permutation(y.size)
    pts, y = pts[order].astype(np.float32), y[order].astype(np.int32)
    n_test = y.size // 6
    total = y.size - n_test
    n_train, n_val = _split_sizes(total, num_val, s.text)
    b = _Builder(n_train, n_val, n_test, 2, None)
    b.put(0, pts[:total], y[:total])
    b.put_test(0, pts[total:], y[total:])
    defaults = {"lr": {"svm": 0.1, "softmax": 0.5}, "reg": 1e-3, "batch_size": 128,
                "init_scale": 0.01, "sigma": 0.05}
    return b.finish(s.text, names, lambda f, m: None, defaults)


def bench_load(tmpdir: str | Path, spec: str | None = None) -> dict:
    """Time a cold load of full-size fake CIFAR-10 in a fresh process (see readers)."""
    from engine import readers

    return readers.bench_load(tmpdir, spec)


__all__ = ["Dataset", "DataSpec", "DatasetError", "bench_load", "load_dataset", "parse_spec"]
