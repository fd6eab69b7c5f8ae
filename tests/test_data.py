"""engine.data and engine.readers: specs, built-in sets, CIFAR-10 / MNIST / npz, bad input."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import datafiles
import numpy as np
import pytest

from engine.data import DatasetError, DataSpec, bench_load, load_dataset, parse_spec
from engine.readers import safe_unpickle


def check_preprocessed(ds, n_train=None, n_val=None, d=None):
    """The shared conventions every dataset must meet."""
    for X, y in ((ds.X_train, ds.y_train), (ds.X_val, ds.y_val), (ds.X_test, ds.y_test)):
        if X is None:
            assert y is None
            continue
        assert X.dtype == np.float32 and X.ndim == 2
        assert X.strides[1] == 4
        if X.shape[1] >= 16:  # rows on cache lines (narrower rows stay packed)
            assert X.strides[0] % 64 == 0 and X.ctypes.data % 64 == 0
        assert y.dtype == np.int32 and y.shape == (X.shape[0],)
        assert X.shape[1] == ds.dim
        assert np.all(X[:, -1] == 1.0)
        assert np.isfinite(X).all()
        assert y.min() >= 0 and y.max() < ds.num_classes
    assert ds.mean.shape == (ds.dim - 1,) and ds.mean.dtype == np.float32
    # mean training image subtracted: the training columns now average to ~0
    col_mean = ds.X_train[:, :-1].mean(axis=0, dtype=np.float64)
    scale = max(1.0, float(np.abs(ds.mean).max()))
    assert np.abs(col_mean).max() < 1e-4 * scale
    if n_train is not None:
        assert ds.num_train == n_train
    if n_val is not None:
        assert ds.num_val == n_val
    if d is not None:
        assert ds.dim == d
    desc = ds.describe()
    json.dumps(desc)
    assert desc["num_train"] == ds.num_train and desc["fingerprint"] == ds.fingerprint
    assert len(ds.fingerprint) == 64
    assert set(ds.defaults) >= {"lr", "reg", "batch_size", "sigma", "init_scale"}
    assert set(ds.defaults["lr"]) == {"svm", "softmax"}


def raw(ds, X):
    """Undo the mean subtraction: the pixels as they were on disk (HWC order)."""
    return X[:, :-1] + ds.mean


def hwc(data: np.ndarray) -> np.ndarray:
    """CIFAR rows (R, G, B planes) -> (H, W, C) interleaved rows."""
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 3072)


def one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# -- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, kind, count", [
    ("synthetic", "synthetic", None), ("synthetic:5000", "synthetic", 5000),
    ("SPIRAL", "spiral", None), ("blobs", "blobs", None), (" synthetic:1_000 ", "synthetic", 1000),
])
def test_parse_spec_builtin(spec, kind, count):
    s = parse_spec(spec)
    assert (s.kind, s.count, s.path) == (kind, count, None)
    assert parse_spec(s.text) == s


def test_parse_spec_paths_expand_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    s = parse_spec("cifar10:~/data/cifar")
    assert s.path == (tmp_path / "data" / "cifar").resolve()
    assert s.text == f"cifar10:{s.path}"
    assert parse_spec("npz:rel.npz").path == Path("rel.npz").resolve()
    assert parse_spec(s) is s


@pytest.mark.parametrize("spec, needle", [
    ("imagenet", "synthetic, synthetic:N, spiral, blobs, cifar10:DIR, mnist:DIR, npz:FILE"),
    ("synthetic:abc", "synthetic:N"), ("synthetic:5", "from 20"),
    ("synthetic:-100", "from 20"), ("spiral:300", "takes no argument"),
    ("cifar10:", "give a path"), ("npz:  ", "npz:FILE"), ("", "unknown dataset"),
])
def test_parse_spec_errors(spec, needle):
    with pytest.raises(DatasetError) as e:
        parse_spec(spec)
    one_line_error(e, needle)


# -- built-in data ----------------------------------------------------------------------


def test_synthetic_small_shapes_and_determinism():
    a = load_dataset("synthetic:400")
    b = load_dataset("synthetic:400")
    check_preprocessed(a, n_train=360, n_val=40, d=3073)
    assert a.spec == "synthetic:400" and a.image_shape == (32, 32, 3)
    assert a.num_classes == 10 and a.num_test == 80
    assert a.fingerprint == b.fingerprint
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "mean"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    pixels = raw(a, a.X_train)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    np.testing.assert_allclose(pixels, np.rint(pixels), atol=2e-3)  # whole-number pixels
    assert 30 < pixels.std() < 90  # CIFAR-like contrast (CIFAR-10: about 64)
    assert len(np.unique(a.y_train)) == 10


def test_synthetic_is_a_prefix_and_split_is_configurable():
    small = load_dataset("synthetic:300", num_val=50)
    big = load_dataset("synthetic:2100")
    check_preprocessed(small, n_train=250, n_val=50)
    np.testing.assert_allclose(raw(small, small.X_train), raw(big, big.X_train[:250]),
                               atol=2e-3)
    np.testing.assert_array_equal(small.y_train, big.y_train[:250])
    assert small.fingerprint != load_dataset("synthetic:300").fingerprint  # split differs


def test_synthetic_has_class_structure_but_is_not_separable():
    """Nearest class mean (a linear rule) is far above chance and far below perfect."""
    ds = load_dataset("synthetic:3000")
    means = np.stack([ds.X_train[ds.y_train == c].mean(0) for c in range(10)])
    scores = ds.X_val @ means.T - 0.5 * (means**2).sum(1)
    acc = float((scores.argmax(1) == ds.y_val).mean())
    assert 0.2 < acc < 0.8


@pytest.mark.parametrize("spec, classes", [("spiral", 3), ("blobs", 4)])
def test_point_sets(spec, classes):
    ds = load_dataset(spec)
    check_preprocessed(ds, d=3)
    assert ds.image_shape is None and ds.num_classes == classes
    assert 300 <= ds.num_train <= 3000 and ds.num_val > 0 and ds.num_test > 0
    assert 0.01 <= ds.defaults["lr"]["softmax"] <= 1
    assert load_dataset(spec).fingerprint == ds.fingerprint


def test_progress_is_reported_in_order():
    seen = []
    load_dataset("synthetic:2500", progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 and isinstance(m, str) for f, m in seen)


def test_num_val_out_of_range():
    with pytest.raises(DatasetError) as e:
        load_dataset("synthetic:100", num_val=100)
    one_line_error(e, "num_val=100", "1 to 99")


# -- CIFAR-10 ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["py2", "py3-np1", "py3", "proto5"])
def test_cifar_python_version_all_pickle_styles(tmp_path, style):
    folder = tmp_path / "cifar-10-batches-py"
    written = datafiles.write_cifar_py(folder, n=40, style=style)
    ds = load_dataset(f"cifar10:{tmp_path}", num_val=20)  # the parent folder works too
    check_preprocessed(ds, n_train=180, n_val=20, d=3073)
    assert ds.spec == f"cifar10:{folder.resolve()}"
    assert ds.class_names == datafiles.NAMES and ds.image_shape == (32, 32, 3)
    train = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{k}"][1] for k in range(1, 6)])
    np.testing.assert_array_equal(raw(ds, ds.X_train), hwc(train[:180]))
    np.testing.assert_array_equal(raw(ds, ds.X_val), hwc(train[180:]))  # val: end of train
    np.testing.assert_array_equal(ds.y_train, labels[:180])
    np.testing.assert_array_equal(ds.y_val, labels[180:])
    np.testing.assert_array_equal(raw(ds, ds.X_test), hwc(written["test_batch"][0]))
    np.testing.assert_array_equal(ds.y_test, written["test_batch"][1])
    np.testing.assert_allclose(ds.mean, hwc(train[:180]).mean(0), rtol=1e-6)


def test_cifar_pixel_layout(tmp_path):
    """Row = R plane, G plane, B plane on disk; (H, W, C) interleaved in X."""
    written = datafiles.write_cifar_py(tmp_path, n=20)
    ds = load_dataset(f"cifar10:{tmp_path}", num_val=10)
    data = written["data_batch_1"][0]
    img = raw(ds, ds.X_train[:1]).reshape(32, 32, 3)
    for c in range(3):
        assert img[5, 7, c] == data[0, c * 1024 + 5 * 32 + 7]


def test_cifar_binary_version_matches_python_version(tmp_path):
    datafiles.write_cifar_bin(tmp_path / "cifar-10-batches-bin", n=30)
    datafiles.write_cifar_py(tmp_path / "py", n=30, style="py2")
    b = load_dataset(f"cifar10:{tmp_path}")
    p = load_dataset(f"cifar10:{tmp_path / 'py'}")
    check_preprocessed(b, n_train=135, n_val=15)
    assert b.spec.endswith("cifar-10-batches-bin")
    assert b.class_names == p.class_names == datafiles.NAMES
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(b, name), getattr(p, name))
    assert b.fingerprint == p.fingerprint  # same content, same fingerprint
    assert load_dataset(f"cifar10:{tmp_path}", num_val=20).fingerprint != b.fingerprint


def test_cifar_fingerprint_changes_with_one_pixel(tmp_path):
    datafiles.write_cifar_bin(tmp_path, n=20)
    before = load_dataset(f"cifar10:{tmp_path}").fingerprint
    path = tmp_path / "data_batch_4.bin"
    raw_bytes = bytearray(path.read_bytes())
    raw_bytes[100] ^= 1
    path.write_bytes(bytes(raw_bytes))
    assert load_dataset(f"cifar10:{tmp_path}").fingerprint != before


# -- MNIST and npz ----------------------------------------------------------------------


@pytest.mark.parametrize("gz, sep, sub", [(False, "-", ""), (True, "-", ""),
                                          (True, ".", "MNIST/raw")])
def test_mnist(tmp_path, gz, sep, sub):
    arrays = datafiles.write_mnist(tmp_path / sub if sub else tmp_path, gz=gz, sep=sep)
    ds = load_dataset(f"mnist:{tmp_path}")
    check_preprocessed(ds, n_train=108, n_val=12, d=785)
    assert ds.image_shape == (28, 28, 1) and ds.class_names == tuple("0123456789")
    np.testing.assert_array_equal(raw(ds, ds.X_train), arrays["train-images"][:108]
                                  .reshape(108, -1))
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels"])


def test_npz_images_with_val_and_names(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    Xv = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", X_train=X, y_train=np.arange(60) % 3, X_val=Xv,
             y_val=np.arange(10) % 3, class_names=np.array(["a", "b", "c", "d"]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", num_val=5)  # X_val wins over num_val
    check_preprocessed(ds, n_train=60, n_val=10, d=193)
    assert ds.image_shape == (8, 8, 3) and ds.class_names == ("a", "b", "c", "d")
    assert ds.X_test is None and ds.num_test == 0
    np.testing.assert_array_equal(raw(ds, ds.X_val), Xv.reshape(10, -1))


@pytest.mark.parametrize("shape, image_shape", [((50, 784), (28, 28, 1)),
                                                ((50, 12, 10), (12, 10, 1)),
                                                ((50, 2), None)])
def test_npz_flat_and_grey(tmp_path, shape, image_shape):
    X = np.random.default_rng(1).standard_normal(shape)
    np.savez(tmp_path / "d.npz", X_train=X, y_train=np.arange(50) % 5,
             X_test=X[:7], y_test=np.arange(7) % 5)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    check_preprocessed(ds, n_train=45, n_val=5)
    assert ds.image_shape == image_shape and ds.num_classes == 5 and ds.num_test == 7
    np.testing.assert_allclose(raw(ds, ds.X_train), X[:45].reshape(45, -1), atol=1e-5)


# -- bad input: each gives one line naming the file -------------------------------------


def test_missing_dirs_and_files(tmp_path):
    for spec in (f"cifar10:{tmp_path / 'nope'}", f"mnist:{tmp_path / 'nope'}",
                 f"npz:{tmp_path / 'nope.npz'}"):
        with pytest.raises(DatasetError) as e:
            load_dataset(spec)
        one_line_error(e, str(tmp_path / "nope"))


def test_cifar_dir_without_cifar_files(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, "no CIFAR-10 files", str(tmp_path))


def test_cifar_archive_not_extracted(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path / 'cifar-10-python.tar.gz'}")
    one_line_error(e, "tar xzf")


@pytest.mark.parametrize("binary", [False, True])
def test_cifar_some_batches_missing(tmp_path, binary):
    if binary:
        datafiles.write_cifar_bin(tmp_path, n=10)
        (tmp_path / "data_batch_3.bin").unlink()
        (tmp_path / "test_batch.bin").unlink()
    else:
        datafiles.write_cifar_py(tmp_path, n=10)
        (tmp_path / "data_batch_3").unlink()
        (tmp_path / "test_batch").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, "missing data_batch_3", "test_batch", str(tmp_path))


def test_cifar_truncated_pickle(tmp_path):
    datafiles.write_cifar_py(tmp_path, n=20)
    path = tmp_path / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, str(path), "truncated or corrupt")


def test_cifar_truncated_binary(tmp_path):
    datafiles.write_cifar_bin(tmp_path, n=20)
    path = tmp_path / "data_batch_5.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, str(path), "3073-byte records")


def test_cifar_wrong_array_shape(tmp_path):
    datafiles.write_cifar_py(tmp_path, n=20)
    datafiles.dump({"data": np.zeros((20, 3000), np.uint8), "labels": [0] * 20},
                   tmp_path / "data_batch_4")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, "data_batch_4", "(20, 3000)", "(N, 3072)")


def test_cifar_labels_out_of_range(tmp_path):
    written = datafiles.write_cifar_py(tmp_path, n=20)
    data, labels = written["test_batch"]
    labels = labels.copy()
    labels[3] = 10
    datafiles.dump({"data": data, "labels": labels.tolist()}, tmp_path / "test_batch")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, "test_batch", "label 10", "0..9")


def test_cifar_binary_label_out_of_range(tmp_path):
    datafiles.write_cifar_bin(tmp_path, n=20)
    path = tmp_path / "data_batch_1.bin"
    b = bytearray(path.read_bytes())
    b[3073 * 2] = 200
    path.write_bytes(bytes(b))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, str(path), "label 200")


def test_cifar_empty_batch(tmp_path):
    datafiles.write_cifar_py(tmp_path, n=20)
    datafiles.dump({"data": np.zeros((0, 3072), np.uint8), "labels": []},
                   tmp_path / "data_batch_1")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, "data_batch_1")


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    datafiles.write_cifar_py(tmp_path, n=10)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Evil(marker), "labels": [0]}, f)
    pickle.loads(pickle.dumps(1))  # the plain unpickler is fine; ours must refuse
    with pytest.raises(DatasetError) as e:
        load_dataset(f"cifar10:{tmp_path}")
    one_line_error(e, "data_batch_1", "refused to unpickle", "system")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",  # protocol 0: builtins.eval("1+1")
    b"\x80\x02cnumpy\nload\nq\x00.",  # a numpy global that is not array reconstruction
    b"\x80\x02csubprocess\nPopen\nq\x00.",
])
def test_restricted_unpickler_refuses_other_globals(tmp_path, payload):
    path = tmp_path / "batches.meta"
    path.write_bytes(payload)
    with pytest.raises(DatasetError) as e:
        safe_unpickle(path)
    one_line_error(e, str(path), "refused to unpickle")


def test_mnist_missing_file(tmp_path):
    datafiles.write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(f"mnist:{tmp_path}")
    one_line_error(e, "t10k-labels-idx1-ubyte", str(tmp_path))


def test_mnist_truncated_gzip_and_idx(tmp_path):
    datafiles.write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"mnist:{tmp_path}")
    one_line_error(e, str(path), "gzip")
    path.write_bytes(gzip.compress(datafiles.idx_bytes(np.zeros((10, 28, 28)))[:-5]))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"mnist:{tmp_path}")
    one_line_error(e, str(path), "truncated or corrupt")


def test_mnist_bad_header_and_count_mismatch(tmp_path):
    datafiles.write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    images = tmp_path / "train-images-idx3-ubyte"
    labels.write_bytes(datafiles.idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"mnist:{tmp_path}")
    one_line_error(e, "120 images", "7 labels")
    images.write_bytes(datafiles.idx_bytes(np.zeros((7, 28), np.uint8)))  # 2-D: wrong shape
    with pytest.raises(DatasetError) as e:
        load_dataset(f"mnist:{tmp_path}")
    one_line_error(e, str(images), "bad header")


def test_mnist_label_out_of_range(tmp_path):
    datafiles.write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        datafiles.idx_bytes(np.full(30, 12, np.uint8)))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"mnist:{tmp_path}")
    one_line_error(e, "t10k-labels", "label 12")


def _npz(tmp_path, **arrays) -> str:
    np.savez(tmp_path / "d.npz", **arrays)
    return f"npz:{tmp_path / 'd.npz'}"


X20 = np.random.default_rng(2).standard_normal((20, 6)).astype(np.float32)
Y20 = np.arange(20) % 2


@pytest.mark.parametrize("arrays, needles", [
    ({"X_train": X20}, ["missing array y_train"]),
    ({"X_train": X20, "y_train": Y20[:5]}, ["y_train", "20 integer labels"]),
    ({"X_train": X20.reshape(-1), "y_train": Y20}, ["X_train has shape (120,)"]),
    ({"X_train": X20, "y_train": Y20 - 1}, ["label -1", "out of range"]),
    ({"X_train": X20, "y_train": Y20 * 3, "class_names": np.array(["a", "b"])},
     ["label 3", "0..1"]),
    ({"X_train": X20, "y_train": Y20.astype(float)}, ["y_train", "integer labels"]),
    ({"X_train": np.where(np.eye(20, 6) > 0, np.nan, X20), "y_train": Y20},
     ["X_train contains NaN or inf"]),
    ({"X_train": X20, "y_train": Y20, "X_val": X20[:3] * np.inf, "y_val": Y20[:3]},
     ["X_val contains NaN or inf"]),
    ({"X_train": X20, "y_train": Y20, "X_val": X20[:3, :4], "y_val": Y20[:3]},
     ["X_val", "(N, 6)"]),
    ({"X_train": X20, "y_train": Y20, "X_val": X20[:3]}, ["X_val without y_val"]),
    ({"X_train": X20[:0], "y_train": Y20[:0]}, ["X_train has shape (0, 6)"]),
    ({"X_train": X20[:1], "y_train": Y20[:1]}, ["empty"]),
    ({"X_train": np.full((20, 6), "a"), "y_train": Y20}, ["X_train is a <U1 array"]),
])
def test_npz_bad_input(tmp_path, arrays, needles):
    with pytest.raises(DatasetError) as e:
        load_dataset(_npz(tmp_path, **arrays))
    one_line_error(e, str(tmp_path / "d.npz"), *needles)


def test_npz_object_array_refused(tmp_path):
    obj = np.empty(20, dtype=object)
    spec = _npz(tmp_path, X_train=X20, y_train=obj)
    with pytest.raises(DatasetError) as e:
        load_dataset(spec)
    one_line_error(e, "allow_pickle=False")


def test_npz_corrupt_file(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    one_line_error(e, str(tmp_path / "d.npz"))


@pytest.mark.parametrize("content, needle", [
    (b"root:x:0:0:root:/root:/bin/bash\n", "not an .npz archive (it starts with b'root:x')"),
    (b"", "an empty file"),
    (b"\x93NUMPY\x01\x00v\x00", "a single .npy array"),
    (b"\x80\x04\x95", "not an .npz archive"),  # a pickle (a CIFAR batch, say)
])
def test_npz_that_is_not_a_zip_says_what_it_is(tmp_path, content, needle):
    # np.load takes any non-zip for a pickle: these all used to read "holds a pickled
    # object array", which sent the user looking for an object array
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    msg = one_line_error(e, str(tmp_path / "d.npz"), needle, "numpy.savez")
    assert "pickled" not in msg


# -- benchmark helper -------------------------------------------------------------------


def test_bench_load_runs_in_a_subprocess(tmp_path):
    datafiles.write_cifar_bin(tmp_path, n=20)
    out = bench_load(tmp_path, spec=f"cifar10:{tmp_path}")
    assert out["num_train"] == 90 and out["seconds"] > 0 and out["peak_mb"] > 10


def test_dataspec_text_roundtrip():
    assert DataSpec("synthetic").text == "synthetic"
    assert DataSpec("synthetic", count=300).text == "synthetic:300"
