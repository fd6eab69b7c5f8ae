"""Writers of tiny datasets in the exact on-disk layouts descent reads (for tests only).

- CIFAR-10 python version: pickled dicts as Python 2 wrote them (byte-string keys and
  values, numpy 1.x global names), as Python 3 writes them with numpy 1.x or 2.x, and
  protocol 5.
- CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes.
- MNIST IDX files, gzipped or not.
- npz files via ``numpy.savez``.
Every writer returns what it wrote so a test can compare.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck")


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


class _StylePickler(pickle._Pickler):  # the pure-Python pickler lets us pick the opcodes
    """Writes numpy's ``_reconstruct`` under a chosen module name; ``py2`` writes bytes as
    Python 2 ``str`` (BINSTRING), exactly as Python 2's cPickle did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, f, protocol: int, numpy_module: str, py2: bool) -> None:
        super().__init__(f, protocol)
        self.numpy_module, self.py2 = numpy_module, py2

    def save_bytes(self, obj):  # noqa: D102
        if not self.py2:
            return pickle._Pickler.save_bytes(self, obj)
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):  # noqa: D102
        if obj is _reconstruct():
            module, name = self.numpy_module, "_reconstruct"
            if self.proto >= 4:
                self.save(module)
                self.save(name)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump(obj, path: Path, style: str = "py3") -> None:
    """Pickle ``obj`` to ``path`` in a style: py2 | py3-np1 | py3 (this numpy) | proto5."""
    if style == "proto5":
        path.write_bytes(pickle.dumps(obj, protocol=5))
        return
    module = "numpy._core.multiarray" if style == "py3" else "numpy.core.multiarray"
    with open(path, "wb") as f:
        _StylePickler(f, 2 if style == "py2" else 4, module, style == "py2").dump(obj)


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3072) uint8 pixels (R, G, B planes) and n labels that cover every class."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    return data, labels


def write_cifar_py(folder: Path, n: int = 40, style: str = "py3") -> dict:
    """CIFAR-10 python version with n images per batch; returns {file name: (data, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    py2 = style == "py2"
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_arrays(n, seed=i)
        d = {"batch_label": f"batch {i}", "labels": labels.tolist(), "data": data,
             "filenames": [f"img_{j}.png" for j in range(n)]}
        if py2:
            d = {k.encode(): ([s.encode() for s in v] if k == "filenames"
                              else v.encode() if isinstance(v, str) else v)
                 for k, v in d.items()}
        dump(d, folder / name, style)
        out[name] = (data, labels)
    meta = {"label_names": list(NAMES), "num_cases_per_batch": n, "num_vis": 3072}
    if py2:
        meta = {b"label_names": [s.encode() for s in NAMES], b"num_cases_per_batch": n,
                b"num_vis": 3072}
    dump(meta, folder / "batches.meta", style)
    return out


def write_cifar_bin(folder: Path, n: int = 40) -> dict:
    """CIFAR-10 binary version with the same content as ``write_cifar_py``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_arrays(n, seed=i)
        np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1).tofile(
            folder / f"{name}.bin")
        out[name] = (data, labels)
    (folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian sizes, data."""
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 120, n_test: int = 30, gz: bool = False,
                sep: str = "-") -> dict:
    """The four MNIST files (28x28 images); returns {stem: array}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        name = f"{stem}{sep}idx{arr.ndim}-ubyte"
        raw = idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays
