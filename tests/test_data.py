"""Datasets: digits, CIFAR-10/100 (shared subsets when present, else skipped; plus a tiny
synthetic archive in the official layout built here), the tf.data pipeline, and every
error path of the loaders."""

import hashlib
import io
import os
import pickle
import tarfile
import time

import numpy as np
import pytest

from conftest import CIFAR_ARCHIVES
from elastic_lib.control.datasets import DatasetError
from elastic_lib.data import arrays as D
from elastic_lib.data.arrays import load_cifar_arrays, load_dataset
from elastic_lib.data.pipeline import EpochPlan, make_pipeline
from elastic_lib.models.backbones import preprocess_input

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_COARSE = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
]


# ---------------------------------------------------------------- a synthetic official-layout archive
def _pickled(obj) -> bytes:
    # The official files are Python 2 pickles; Python 3 cannot write those byte-for-byte (its
    # protocol 2 wraps bytes in _codecs.encode), protocol 4 is the closest plain equivalent.
    return pickle.dumps(obj, protocol=4)


def make_synthetic_cifar10(folder, n_train_per_batch=(12, 8), n_test=10, seed=0):
    """cifar-10-python.tar.gz with two training batches, known pixels and labels."""
    rng = np.random.default_rng(seed)
    batches = {}
    for i, n in enumerate(n_train_per_batch, start=1):
        batches[f"data_batch_{i}"] = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
    batches["test_batch"] = {
        b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, n_test)],
    }
    batches["batches.meta"] = {b"label_names": [n.encode() for n in CIFAR10_NAMES]}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for member, obj in list(batches.items()) + [("readme.html", None)]:
            payload = b"<html></html>" if obj is None else _pickled(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path, batches


def test_synthetic_archive_known_pixels(tmp_path):
    path, batches = make_synthetic_cifar10(tmp_path / "data")
    (x_tr, y_tr), (x_te, y_te), names = load_cifar_arrays("cifar10", str(tmp_path / "data"))
    raw_train = np.concatenate([batches["data_batch_1"][b"data"], batches["data_batch_2"][b"data"]])
    assert x_tr.shape == (20, 32, 32, 3) and x_tr.dtype == np.uint8
    assert x_te.shape == (10, 32, 32, 3)
    assert list(y_tr) == batches["data_batch_1"][b"labels"] + batches["data_batch_2"][b"labels"]
    assert list(y_te) == batches["test_batch"][b"labels"]
    assert names == CIFAR10_NAMES
    # row layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major
    for i in range(20):
        for r, c in ((0, 0), (0, 31), (5, 7), (31, 0), (31, 31)):
            for ch in range(3):
                assert x_tr[i, r, c, ch] == raw_train[i, ch * 1024 + r * 32 + c]


def test_synthetic_extracted_folder(tmp_path):
    path, batches = make_synthetic_cifar10(tmp_path / "archive")
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    a = load_cifar_arrays("cifar10", str(tmp_path / "archive"))
    b = load_cifar_arrays("cifar10", str(tmp_path / "extracted"))
    np.testing.assert_array_equal(a[0][0], b[0][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])
    assert a[2] == b[2]


# ---------------------------------------------------------------- digits
def test_digits_loader():
    from sklearn.datasets import load_digits

    s = load_dataset("digits", seed=0)
    ref = load_digits()
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 1797
    assert s.num_classes == 10 and s.class_names == [str(i) for i in range(10)]
    for x in (s.x_train, s.x_val, s.x_test):
        assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 3)
        assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])
    all_y = np.concatenate([s.y_train, s.y_val, s.y_test])
    np.testing.assert_array_equal(np.bincount(all_y), np.bincount(ref.target))
    # the 0..16 grey levels are scaled to 0..255
    assert s.x_train.max() == 255 and set(np.unique(s.x_train)) <= {round(v * 255 / 16) for v in range(17)}
    # stratified 20 % validation split of the training part (and a fixed 20 % test split)
    assert len(s.y_test) == 360
    trainval = np.bincount(np.concatenate([s.y_train, s.y_val]), minlength=10)
    val = np.bincount(s.y_val, minlength=10)
    assert abs(len(s.y_val) - 0.2 * trainval.sum()) <= 1
    assert np.all(np.abs(val - 0.2 * trainval) <= 1)


def test_digits_split_is_seeded():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    np.testing.assert_array_equal(a.x_test, c.x_test)  # the test split does not depend on the run seed


def test_limit_per_class():
    raw_x, raw_y = D.load_digits_arrays()[0]
    s = load_dataset("digits", limit_per_class=6, test_limit_per_class=3)
    y = np.concatenate([s.y_train, s.y_val])
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 6))
    np.testing.assert_array_equal(np.bincount(s.y_test, minlength=10), np.full(10, 3))
    # the first 6 training images of each class, nothing else
    keep = np.concatenate([np.flatnonzero(raw_y == c)[:6] for c in range(10)])
    expected = sorted(raw_x[i].tobytes() for i in keep)
    assert sorted(img.tobytes() for img in np.concatenate([s.x_train, s.x_val])) == expected


def test_limit_per_class_too_small_for_a_validation_split():
    with pytest.raises(ValueError) as err:
        load_dataset("digits", limit_per_class=1)
    assert isinstance(err.value, DatasetError) and "limit_per_class" in str(err.value)


# ---------------------------------------------------------------- CIFAR subsets (shared/data)
@pytest.fixture(scope="module")
def cifar10(shared_data):
    return load_dataset("cifar10", data_dir=str(shared_data))


@pytest.fixture(scope="module")
def cifar100(shared_data):
    return {mode: load_dataset("cifar100", data_dir=str(shared_data), label_mode=mode) for mode in ("fine", "coarse")}


def _check_split_shapes(s, n_trainval=10000, n_test=2000):
    for x in (s.x_train, s.x_val, s.x_test):
        assert x.ndim == 4 and x.shape[1:] == (32, 32, 3) and x.dtype == np.uint8
    assert len(s.x_train) + len(s.x_val) == n_trainval == len(s.y_train) + len(s.y_val)
    assert len(s.x_test) == n_test == len(s.y_test)


def test_cifar10_subset(cifar10):
    s = cifar10
    _check_split_shapes(s)
    assert s.class_names == CIFAR10_NAMES
    np.testing.assert_array_equal(np.bincount(np.concatenate([s.y_train, s.y_val])), np.full(10, 1000))
    np.testing.assert_array_equal(np.bincount(s.y_test), np.full(10, 200))
    np.testing.assert_array_equal(np.bincount(s.y_val), np.full(10, 200))  # stratified 20 %


def test_cifar100_subset_fine_and_coarse(cifar100):
    fine, coarse = cifar100["fine"], cifar100["coarse"]
    for s in (fine, coarse):
        _check_split_shapes(s)
    assert fine.num_classes == 100 and fine.class_names[0] == "apple" and fine.class_names[-1] == "worm"
    assert fine.class_names == sorted(fine.class_names)  # official order is alphabetical
    assert coarse.class_names == CIFAR100_COARSE
    np.testing.assert_array_equal(np.bincount(fine.y_test, minlength=100), np.full(100, 20))
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([fine.y_train, fine.y_val]), minlength=100), np.full(100, 100)
    )
    np.testing.assert_array_equal(np.bincount(coarse.y_test, minlength=20), np.full(20, 100))
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([coarse.y_train, coarse.y_val]), minlength=20), np.full(20, 500)
    )
    assert fine.name == "cifar100" and coarse.name == "cifar100coarse"  # the run-id label rule (config)


def _decode_first(archive, member, label_key):
    """Independent reader: tarfile + pickle, official row layout -> HWC."""
    with tarfile.open(archive, "r:gz") as tar:
        d = pickle.load(tar.extractfile(member), encoding="bytes")
    return np.asarray(d[b"data"][0], np.uint8).reshape(3, 32, 32).transpose(1, 2, 0), d[label_key][0], len(d[b"data"])


def test_cifar10_first_images_match_independent_decode(shared_data):
    archive = shared_data / CIFAR_ARCHIVES["cifar10"]
    (x_tr, y_tr), (x_te, y_te), _ = load_cifar_arrays("cifar10", str(shared_data))
    img, label, n = _decode_first(archive, "cifar-10-batches-py/data_batch_1", b"labels")
    np.testing.assert_array_equal(x_tr[0], img)
    assert y_tr[0] == label and len(x_tr) == n == 10000
    img, label, n = _decode_first(archive, "cifar-10-batches-py/test_batch", b"labels")
    np.testing.assert_array_equal(x_te[0], img)
    assert y_te[0] == label and len(x_te) == n == 2000


def test_cifar100_first_image_matches_independent_decode(shared_data):
    archive = shared_data / CIFAR_ARCHIVES["cifar100"]
    for mode in ("fine", "coarse"):
        (x_tr, y_tr), _, _ = load_cifar_arrays("cifar100", str(shared_data), label_mode=mode)
        img, label, _ = _decode_first(archive, "cifar-100-python/train", f"{mode}_labels".encode())
        np.testing.assert_array_equal(x_tr[0], img)
        assert y_tr[0] == label


def test_cifar_limit_per_class(shared_data):
    s = load_dataset("cifar10", data_dir=str(shared_data), limit_per_class=5, test_limit_per_class=2)
    np.testing.assert_array_equal(np.bincount(np.concatenate([s.y_train, s.y_val]), minlength=10), np.full(10, 5))
    np.testing.assert_array_equal(np.bincount(s.y_test, minlength=10), np.full(10, 2))


# ---------------------------------------------------------------- tf.data pipeline (equivalence: test_backends)
def test_make_pipeline_shapes_and_labels():
    (x, y), _, _ = D.load_digits_arrays()
    x, y = x[:10], y[:10]

    ds = make_pipeline(x, y, 16, preprocess_input("mobilenet_0.75"), batch_size=4, num_outputs=3)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    for i, (xb, yb) in enumerate(batches):
        assert xb.dtype.name == "float32" and tuple(xb.shape[1:]) == (16, 16, 3)
        assert isinstance(yb, tuple) and len(yb) == 3
        for t in yb:
            assert t.dtype.name == "int64"
            np.testing.assert_array_equal(t.numpy(), y[4 * i : 4 * i + 4])


def test_make_pipeline_preprocess_values():
    # at native size no resizing happens; MobileNet's preprocess maps [0, 255] to [-1, 1]
    x = np.arange(2 * 8 * 8 * 3, dtype=np.int64).reshape(2, 8, 8, 3) % 256
    x = x.astype(np.uint8)

    ds = make_pipeline(x, np.array([3, 4]), 8, preprocess_input("mobilenet_0.75"), batch_size=2)
    xb, (yb,) = next(iter(ds))
    np.testing.assert_allclose(xb.numpy(), x.astype(np.float64) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(yb.numpy(), [3, 4])


def test_make_pipeline_shuffle_keeps_pairs():
    x = np.repeat(np.arange(12, dtype=np.uint8)[:, None, None, None], 4, axis=1).repeat(4, 2).repeat(3, 3)
    y = np.arange(12)
    ds = make_pipeline(x, y, 4, lambda t: t, batch_size=5, plan=EpochPlan(12, seed=3))
    xs, ys = zip(*[(xb.numpy(), yb[0].numpy()) for xb, yb in ds])
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    assert sorted(ys) == list(range(12)) and list(ys) != list(range(12))
    np.testing.assert_array_equal(xs[:, 0, 0, 0], ys)  # image i still carries label i


# ---------------------------------------------------------------- errors
def test_missing_data_dir_contents(tmp_path, monkeypatch):
    monkeypatch.delenv("ELASTIC_DATA_DIR", raising=False)
    with pytest.raises(DatasetError, match="data_dir"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("cifar100", data_dir=str(tmp_path / "nope"))


@pytest.fixture
def cifar10_archive(tmp_path):
    """The shared CIFAR-10 subset archive if present, else a synthetic one."""
    from conftest import SHARED_DATA

    shared = SHARED_DATA / CIFAR_ARCHIVES["cifar10"]
    if shared.is_file():
        return str(shared)
    return make_synthetic_cifar10(tmp_path / "synthetic")[0]


def test_corrupt_archive(tmp_path, cifar10_archive):
    with open(cifar10_archive, "rb") as f:
        head = f.read(min(os.path.getsize(cifar10_archive) // 2, 1 << 20))
    folder = tmp_path / "truncated"
    folder.mkdir()
    (folder / "cifar-10-python.tar.gz").write_bytes(head)
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset("cifar10", data_dir=str(folder))


def test_sha256sums_mismatch_and_match(tmp_path):
    path, _ = make_synthetic_cifar10(tmp_path / "sub")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    sums = tmp_path / "SHA256SUMS"  # one folder up, listing the archive by relative path
    sums.write_text(f"{'0' * 64}  sub/cifar-10-python.tar.gz\n")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    sums.write_text(f"{digest}  sub/cifar-10-python.tar.gz\n")
    assert len(load_cifar_arrays("cifar10", str(tmp_path))[0][0]) == 20


def test_sha256sums_of_a_sibling_folder_do_not_judge_another_archive(tmp_path):
    """A listing one folder up names ``full/x.tar.gz``: a subset ``sub/x.tar.gz`` of the same file
    name (scripts/make_cifar_subset.py's layout without its own SHA256SUMS) is not checked against
    it; the listed one still is."""
    sub, _ = make_synthetic_cifar10(tmp_path / "sub")
    full, _ = make_synthetic_cifar10(tmp_path / "full", n_train_per_batch=(20, 10), seed=1)
    with open(full, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  full/cifar-10-python.tar.gz\n")
    assert len(load_cifar_arrays("cifar10", str(tmp_path / "sub"))[0][0]) == 20
    assert len(load_cifar_arrays("cifar10", str(tmp_path / "full"))[0][0]) == 30
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  full/cifar-10-python.tar.gz\n")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_cifar_arrays("cifar10", str(tmp_path / "full"))
    assert len(load_cifar_arrays("cifar10", str(tmp_path / "sub"))[0][0]) == 20


def test_unknown_dataset_and_label_mode():
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist")
    for valid in ("digits", "cifar10", "cifar100"):
        assert valid in str(err.value)
    with pytest.raises(DatasetError, match="fine"):
        load_dataset("cifar100", label_mode="superclass")


def test_download_failure_says_how_to_provide_data(tmp_path, monkeypatch):
    import keras.src.backend.config as keras_config

    monkeypatch.setitem(D._CIFAR["cifar10"], "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # keras.utils.get_file reads its cache folder once, at import: point it here too, so that a
    # CIFAR archive cached in the user's real ~/.keras cannot satisfy the download
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.delenv("ELASTIC_DATA_DIR", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=None)
    assert time.perf_counter() - t0 < 20
    msg = str(err.value)
    assert "data_dir" in msg and "ELASTIC_DATA_DIR" in msg and "cifar-10-python.tar.gz" in msg
