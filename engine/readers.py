"""Readers for datasets on disk: CIFAR-10 (python and binary versions), MNIST and npz.

Each reader checks every file before using it, names the file in any error, and writes
raw pixels straight into :class:`engine.data._Builder`'s preallocated float32 arrays. The
CIFAR-10 pickles are read by a restricted unpickler that rebuilds dicts, lists, strings,
numbers and numpy arrays and refuses every other global, so a malicious pickle runs
nothing.
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from engine.data import (
    CIFAR10_CLASSES,
    Dataset,
    DatasetError,
    DataSpec,
    Progress,
    _Builder,
    _check_labels,
    _split_sizes,
)

# -- CIFAR-10 ------------------------------------------------------------------------------

_PY_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
_BIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin",
                                                              "batches.meta.txt"]


def _numpy_attr(module: str, name: str) -> Any:
    """numpy's ``_reconstruct`` & co. under numpy 1.x (numpy.core) or 2.x (numpy._core)."""
    for mod in (module.replace("numpy.core", "numpy._core"),
                module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in a protocol-0..2 pickle written by Python 3
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, str, bytes, numbers and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _ForbiddenGlobal(f"{module}.{name}")
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_attr(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise _ForbiddenGlobal("a persistent id")


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` (Python 2 or 3 pickle) with the restricted unpickler.

    Raises:
        DatasetError: a forbidden global (nothing is executed), or a truncated/corrupt file.
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as e:
        raise DatasetError(f"{path}: refused to unpickle: it calls {e}, which a dataset file "
                           "never needs (the file may be malicious); replace it with the "
                           "original download") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - any failure of a corrupt pickle is one message
        raise DatasetError(f"{path}: truncated or corrupt pickle ({type(e).__name__}); "
                           "re-extract it from the original archive") from None


def _key(d: dict, name: str) -> Any:
    """``d[name]`` for Python-3 (str) or Python-2 (bytes) keys; None when absent."""
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    return None


def _cifar_dir(s: DataSpec) -> tuple[Path, bool]:
    """(folder holding the files, is_python_version), checking every file is present."""
    p = s.path
    assert p is not None
    if not p.exists():
        raise DatasetError(f"cifar10: {p} does not exist; point --data cifar10:DIR at the "
                           "folder cifar-10-batches-py (or -bin) or its parent")
    if p.is_file():
        hint = (f"extract it first (tar xzf {p.name}) and " if ".tar" in p.name or
                p.suffix == ".tgz" else "")
        raise DatasetError(f"cifar10: {p} is a file; {hint}give the extracted folder")
    for folder in (p, p / "cifar-10-batches-py", p / "cifar-10-batches-bin"):
        for names, is_py in ((_PY_FILES, True), (_BIN_FILES, False)):
            present = [n for n in names if (folder / n).is_file()]
            if len(present) == len(names):
                return folder, is_py
            if present:
                missing = ", ".join(n for n in names if n not in present)
                raise DatasetError(f"cifar10: {folder} is incomplete: missing {missing}; "
                                   "re-extract the CIFAR-10 archive")
    raise DatasetError(f"cifar10: no CIFAR-10 files in {p}: expected data_batch_1..5, "
                       "test_batch, batches.meta (python version) or the same with .bin and "
                       "batches.meta.txt (binary version)")


def _read_cifar_batch(path: Path, is_py: bool) -> tuple[np.ndarray, np.ndarray]:
    """One batch as ((n, 3072) uint8 rows in R,G,B plane order, (n,) int32 labels)."""
    if is_py:
        d = safe_unpickle(path)
        data = _key(d, "data") if isinstance(d, dict) else None
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 \
                or data.dtype != np.uint8 or data.shape[0] == 0:
            got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                   else type(data if isinstance(d, dict) else d).__name__)
            raise DatasetError(f"{path}: 'data' is {got}, expected a uint8 array of shape "
                               "(N, 3072); this is not a CIFAR-10 batch")
        return data, _check_labels(_key(d, "labels"), data.shape[0], 10, path)
    size = path.stat().st_size
    if size == 0 or size % 3073:
        raise DatasetError(f"{path}: truncated or corrupt: {size} bytes is not a whole number "
                           "of 3073-byte records; re-extract it from the original archive")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    return raw[:, 1:], _check_labels(raw[:, 0], raw.shape[0], 10, path)


def _cifar_names(folder: Path, is_py: bool) -> tuple[str, ...]:
    path = folder / ("batches.meta" if is_py else "batches.meta.txt")
    if is_py:
        meta = safe_unpickle(path)
        names = _key(meta, "label_names") if isinstance(meta, dict) else None
    else:
        names = path.read_bytes().decode("latin1").split()
    if not isinstance(names, list) or len(names) < 10:
        raise DatasetError(f"{path}: expected 10 class names, found "
                           f"{len(names) if isinstance(names, list) else 'none'}; "
                           "re-extract the CIFAR-10 archive")
    return tuple((n.decode("latin1") if isinstance(n, bytes) else str(n)) for n in names[:10])


def load_cifar10(s: DataSpec, num_val: int | None, report: Progress) -> Dataset:
    folder, is_py = _cifar_dir(s)
    files = _PY_FILES if is_py else _BIN_FILES
    names = _cifar_names(folder, is_py)
    batches = []
    for i, name in enumerate(files[:6]):
        report(0.45 * i / 6, f"reading {name}")
        batches.append(_read_cifar_batch(folder / name, is_py))
    train, test = batches[:5], batches[5]
    total = sum(x.shape[0] for x, _ in train)
    n_train, n_val = _split_sizes(total, num_val, f"cifar10:{folder}")
    b = _Builder(n_train, n_val, test[0].shape[0], 3072, (32, 32, 3), chw=True)
    at = 0
    for i, (x, y) in enumerate(train):
        report(0.45 + 0.4 * i / 6, "converting to float32")
        b.put(at, x, y)
        at += x.shape[0]
    b.put_test(0, *test)
    del batches, train, test
    return b.finish(DataSpec("cifar10", path=folder).text, names, report)


# -- MNIST ---------------------------------------------------------------------------------

_MNIST_FILES = {"train-images": 3, "train-labels": 1, "t10k-images": 3, "t10k-labels": 1}


def _find_idx(folder: Path, stem: str, ndim: int) -> Path | None:
    kind = f"idx{ndim}-ubyte"
    for name in (f"{stem}-{kind}", f"{stem}.{kind}"):
        for suffix in ("", ".gz"):
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions, gzipped or not."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: truncated or corrupt gzip file ({e}); "
                           "download it again") from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension"
                           f"{'s' if ndim > 1 else ''} (bad header); check the file name")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = 4 + 4 * ndim
    if len(raw) - body != math.prod(shape):
        raise DatasetError(f"{path}: truncated or corrupt: header says {shape} but the file "
                           f"holds {len(raw) - body} data bytes; download it again")
    return np.frombuffer(raw, np.uint8, offset=body).reshape(shape)


def load_mnist(s: DataSpec, num_val: int | None, report: Progress) -> Dataset:
    p = s.path
    assert p is not None
    if not p.is_dir():
        raise DatasetError(f"mnist: {p} is not a directory; point --data mnist:DIR at the "
                           "folder holding train-images-idx3-ubyte(.gz) and the other 3 files")
    for folder in (p, p / "raw", p / "MNIST" / "raw"):
        found = {stem: _find_idx(folder, stem, nd) for stem, nd in _MNIST_FILES.items()}
        if any(found.values()):
            break
    missing = [f"{stem}-idx{nd}-ubyte" for stem, nd in _MNIST_FILES.items() if not found[stem]]
    if missing:
        raise DatasetError(f"mnist: {folder} is missing {', '.join(missing)} (gzipped or not); "
                           "all four MNIST files are needed")
    files: dict[str, Path] = {k: v for k, v in found.items() if v is not None}
    arrays = {}
    for i, (stem, nd) in enumerate(_MNIST_FILES.items()):
        report(0.5 * i / 4, f"reading {stem}")
        arrays[stem] = _read_idx(files[stem], nd)
    for part in ("train", "t10k"):
        x, y = arrays[f"{part}-images"], arrays[f"{part}-labels"]
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise DatasetError(f"mnist: {found[f'{part}-images']} has {x.shape[0]} images but "
                               f"{found[f'{part}-labels']} has {y.shape[0]} labels")
        arrays[f"{part}-labels"] = _check_labels(y, y.shape[0], 10, files[f"{part}-labels"])
    xtr, xte = arrays["train-images"], arrays["t10k-images"]
    if xtr.shape[1:] != xte.shape[1:]:
        raise DatasetError(f"mnist: training images are {xtr.shape[1:]} but test images are "
                           f"{xte.shape[1:]}; the files do not belong together")
    h, w = xtr.shape[1:]
    n_train, n_val = _split_sizes(xtr.shape[0], num_val, f"mnist:{folder}")
    b = _Builder(n_train, n_val, xte.shape[0], h * w, (h, w, 1))
    report(0.6, "converting to float32")
    b.put(0, xtr.reshape(xtr.shape[0], -1), arrays["train-labels"])
    b.put_test(0, xte.reshape(xte.shape[0], -1), arrays["t10k-labels"])
    return b.finish(DataSpec("mnist", path=folder).text, tuple(str(i) for i in range(10)),
                    report)


# -- npz -----------------------------------------------------------------------------------


def _guess_shape(d: int) -> tuple[int, int, int] | None:
    """(H, W, C) for flat square images (e.g. 3072 -> 32x32x3, 784 -> 28x28x1), else None."""
    for c in (3, 1):
        side = math.isqrt(d // c)
        if d % c == 0 and side * side * c == d and side >= 8:
            return (side, side, c)
    return None


def _check_npz_magic(path: Path) -> None:
    """Refuse a file that is not a zip archive before numpy sees it: np.load takes any
    other file for a pickle, and allow_pickle=False then reports "pickled data" for a text
    file, a CIFAR batch or a single .npy array alike."""
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from None
    if head.startswith(b"PK"):
        return
    what = ("an empty file" if not head
            else "a single .npy array" if head == b"\x93NUMPY"
            else f"not an .npz archive (it starts with {head!r})")
    raise DatasetError(f"{path}: {what}; save X_train and y_train together with "
                       "numpy.savez(path, X_train=..., y_train=...)")


def load_npz(s: DataSpec, num_val: int | None, report: Progress) -> Dataset:
    path = s.path
    assert path is not None
    if not path.is_file():
        raise DatasetError(f"npz: {path} does not exist; give a .npz file with X_train and "
                           "y_train")
    report(0.0, f"reading {path.name}")
    _check_npz_magic(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in ("X_train", "y_train") if k not in keys]
            if missing:
                raise DatasetError(f"{path}: missing array {' and '.join(missing)} (found: "
                                   f"{', '.join(sorted(keys)) or 'nothing'})")
            arr = {k: z[k] for k in ("X_train", "y_train", "X_val", "y_val", "X_test",
                                     "y_test", "class_names") if k in keys}
    except DatasetError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DatasetError(f"{path}: holds a pickled object array; descent loads npz with "
                               "allow_pickle=False: save plain numeric arrays") from None
        raise DatasetError(f"{path}: not a valid .npz file ({e})") from None
    except Exception as e:  # noqa: BLE001 - zipfile/OSError/EOFError on a corrupt file
        raise DatasetError(f"{path}: truncated or corrupt .npz file ({type(e).__name__}: "
                           f"{e}); save it again with numpy.savez") from None
    X = arr["X_train"]
    if X.ndim not in (2, 3, 4) or X.shape[0] == 0 or X.size == 0:
        raise DatasetError(f"{path}: X_train has shape {X.shape}; expected images N×H×W×C, "
                           "N×H×W or flat N×D with N ≥ 1")
    feat = X.shape[1:]
    image_shape = (None if X.ndim == 2 and _guess_shape(feat[0]) is None
                   else _guess_shape(feat[0]) if X.ndim == 2
                   else (feat[0], feat[1], 1) if X.ndim == 3 else feat)
    pairs = [(p, arr.get(f"X_{p}"), arr.get(f"y_{p}")) for p in ("train", "val", "test")]
    for part, x, y in pairs:
        if (x is None) != (y is None):
            raise DatasetError(f"{path}: has {'X' if y is None else 'y'}_{part} without "
                               f"{'y' if y is None else 'X'}_{part}; give both or neither")
        if x is None or y is None:
            continue
        if x.dtype.kind not in "biuf" or x.shape[1:] != feat:
            raise DatasetError(f"{path}: X_{part} is a {x.dtype} array of shape {x.shape}; "
                               f"expected numbers of shape (N, {', '.join(map(str, feat))})")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DatasetError(f"{path}: X_{part} contains NaN or inf; clean the data first")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
            raise DatasetError(f"{path}: y_{part} is a {y.dtype} array of shape {y.shape}; "
                               f"expected {x.shape[0]} integer labels (one per row of X_{part})")
    names = arr.get("class_names")
    k = int(max(int(y.max()) for _, x, y in pairs if y is not None and y.size) + 1)
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DatasetError(f"{path}: class_names must be a 1-D array of strings")
        k = names.shape[0]
    class_names = (tuple(str(n) for n in names) if names is not None
                   else tuple(str(i) for i in range(k)))
    for part, _x, y in pairs:
        if y is not None:
            _check_labels(y, y.shape[0], k, Path(f"{path} (y_{part})"))
    d = math.prod(feat)
    has_val = arr.get("X_val") is not None
    total = X.shape[0]
    n_train, n_val = ((total, arr["X_val"].shape[0]) if has_val
                      else _split_sizes(total, num_val, f"npz:{path}"))
    if n_train == 0 or n_val == 0:
        raise DatasetError(f"{path}: the {'validation' if n_val == 0 else 'training'} set is "
                           "empty")
    xt = arr.get("X_test")
    b = _Builder(n_train, n_val, 0 if xt is None else xt.shape[0], d, image_shape)
    report(0.5, "converting to float32")
    b.put(0, X.reshape(total, d), arr["y_train"])
    if has_val:
        b.put(n_train, arr["X_val"].reshape(n_val, d), arr["y_val"])
    if xt is not None and xt.shape[0]:
        b.put_test(0, xt.reshape(xt.shape[0], d), arr["y_test"])
    return b.finish(s.text, class_names, report)


# -- benchmark -----------------------------------------------------------------------------


def write_fake_cifar10(folder: str | Path, *, n_per_batch: int = 10_000, seed: int = 0,
                       binary: bool = False) -> Path:
    """Write CIFAR-10-shaped random data in the python (or binary) layout; returns the dir."""
    rng = np.random.default_rng(seed)
    out = Path(folder) / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    out.mkdir(parents=True, exist_ok=True)
    for name in _PY_FILES[:6]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch)
        if binary:
            recs = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
            recs.tofile(out / f"{name}.bin")
        else:
            with open(out / name, "wb") as f:
                pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data,
                             "filenames": [f"{i}.png" for i in range(n_per_batch)]}, f, 4)
    if binary:
        (out / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    else:
        with open(out / "batches.meta", "wb") as f:
            pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch":
                         n_per_batch, "num_vis": 3072}, f, 4)
    return out


_BENCH_CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from engine.data import load_dataset
ds = load_dataset(sys.argv[1])
s = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
peak = ru.ru_maxrss / 1024  # inherits the parent's high-water mark across fork ...
try:  # ... so prefer VmHWM, which starts afresh with this exec'd program
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
except (OSError, StopIteration):
    pass
print(json.dumps({"seconds": s, "cpu_seconds": ru.ru_utime + ru.ru_stime,
                  "peak_mb": peak, "num_train": ds.num_train}))
"""


def bench_load(tmpdir: str | Path, spec: str | None = None) -> dict:
    """Time a cold load of full-size fake CIFAR-10 (python version) in a fresh process.

    Writes the files to ``tmpdir`` (about 180 MB) unless ``spec`` names another dataset.

    Returns:
        {"spec", "seconds" (wall: import + load + preprocess), "cpu_seconds" (the child's
        user + system time, all threads), "peak_mb" (max RSS of the child, incl. the
        interpreter and numpy), "num_train"}.
    """
    import json
    import subprocess
    import sys

    if spec is None:
        spec = f"cifar10:{write_fake_cifar10(tmpdir)}"
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _BENCH_CHILD, spec], capture_output=True,
                         text=True, env=env, check=True)
    return {"spec": spec, **json.loads(out.stdout.strip().splitlines()[-1])}
