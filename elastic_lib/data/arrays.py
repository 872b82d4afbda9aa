"""Datasets as arrays: digits (embedded), CIFAR-10 and CIFAR-100 (archives, checked), the
seeded stratified validation split.

Images stay at their native resolution in memory (uint8, NHWC); resizing to the model's
``image_size``, augmentation and the backbone's ``preprocess_input`` happen per batch in the
input paths of ``elastic_lib.data.pipeline``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pickle
import socket
import tarfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from elastic_lib.control.config import default
from elastic_lib.control.datasets import (
    _CIFAR,
    DATASETS,
    LABEL_MODES,
    DatasetError,
    dataset_label,
    keras_home,
    locate_cifar,
)

DOWNLOAD_TIMEOUT_S = 30


@dataclass
class Splits:
    """A dataset split into train / validation (seeded, from the training data) / test."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        return (
            f"{self.name}: {self.num_classes} classes, images {self.x_train.shape[1:]} {self.x_train.dtype}; "
            f"train {len(self.y_train)}, val {len(self.y_val)}, test {len(self.y_test)}"
        )


# ---------------------------------------------------------------- raw loaders
def load_digits_arrays():
    """scikit-learn's bundled 8x8 digits (1797 images) as uint8 RGB, with a fixed stratified
    20% test split (seed 0, independent of the run seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    x = np.repeat(x[..., None], 3, axis=-1)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return (x_tr, y_tr), (x_te, y_te), [str(i) for i in range(10)]


def _check_sums(archive: str) -> None:
    """Verify ``archive`` against a SHA256SUMS file next to it or one folder up, if present. A line
    names its file relative to the SHA256SUMS file's folder (``sha256sum``'s format), so a listing
    one folder up for ``cifar10/x.tar.gz`` does not judge ``subset/x.tar.gz``."""
    target = os.path.realpath(archive)
    for folder in (os.path.dirname(target), os.path.dirname(os.path.dirname(target))):
        sums = os.path.join(folder, "SHA256SUMS")
        if not os.path.isfile(sums):
            continue
        with open(sums) as f:
            listed = [line.split() for line in f]
        for parts in listed:
            if len(parts) != 2 or os.path.realpath(os.path.join(folder, parts[1].lstrip("*"))) != target:
                continue
            with open(archive, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if digest != parts[0]:
                raise DatasetError(
                    f"checksum mismatch for {archive}: sha256 {digest} != {parts[0]} "
                    f"listed in {sums}; the archive is corrupt or truncated, download it again"
                )
            return


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Only numpy array reconstruction is allowed (the CIFAR pickles need nothing else)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _unpickle(fileobj) -> dict:
    d = _NumpyOnlyUnpickler(fileobj, encoding="bytes").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _read_cifar_members(source: str, folder: str) -> dict[str, dict]:
    """{member name: unpickled dict} from an archive or an extracted folder."""
    out = {}
    try:
        if os.path.isdir(source):
            for path in sorted(glob.glob(os.path.join(source, "*"))):
                if not path.endswith(".html"):
                    with open(path, "rb") as f:
                        out[os.path.basename(path)] = _unpickle(f)
        else:
            with tarfile.open(source, "r:gz") as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.startswith(folder + "/") and not m.name.endswith(".html"):
                        out[os.path.basename(m.name)] = _unpickle(tar.extractfile(m))
    except (tarfile.TarError, EOFError, zlib.error, OSError, pickle.UnpicklingError, ValueError, KeyError) as err:
        raise DatasetError(
            f"cannot read CIFAR data from {source}: it is corrupt, truncated or has unexpected content "
            f"({type(err).__name__}: {err}); download the official archive again"
        ) from err
    return out


def _download(name: str) -> str:
    from keras.utils import get_file

    spec = _CIFAR[name]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return get_file(
            fname=spec["archive"],
            origin=spec["url"],
            file_hash=spec["sha256"],
            cache_subdir="datasets",
            cache_dir=keras_home(),
        )
    except Exception as err:
        raise DatasetError(
            f"{name} is not available offline and could not be downloaded from {spec['url']} "
            f"({type(err).__name__}: {err}). Download {spec['archive']} on a machine with internet and pass "
            f"data_dir=/folder/holding/it (the official python archive, or its extracted {spec['folder']}/ folder), "
            f"or set ELASTIC_DATA_DIR."
        ) from err
    finally:
        socket.setdefaulttimeout(old)


def load_cifar_arrays(name: str, data_dir: str | None = None, label_mode: str = default("label_mode")):
    """(x_train, y_train), (x_test, y_test), class_names from the official python layout,
    whatever the number of training batches. Images come back as uint8 NHWC."""
    if label_mode not in LABEL_MODES:
        raise DatasetError(f"unknown label_mode {label_mode!r}; valid: {LABEL_MODES}")
    spec = _CIFAR[name]
    source = locate_cifar(name, data_dir) or _download(name)
    if not os.path.isdir(source):
        _check_sums(source)
    members = _read_cifar_members(source, spec["folder"])
    if name == "cifar10":
        train_keys = sorted(k for k in members if k.startswith("data_batch_"))
        test_keys, label_key, meta_key = ["test_batch"], "labels", "batches.meta"
        names_key = "label_names"
    else:
        train_keys, test_keys, meta_key = ["train"], ["test"], "meta"
        label_key = f"{label_mode}_labels"
        names_key = f"{label_mode}_label_names"
    missing = [k for k in train_keys + test_keys + [meta_key] if k not in members] or (
        [] if train_keys else ["data_batch_*"]
    )
    if missing:
        raise DatasetError(f"{source} lacks {missing}: not an official {name} python-layout archive")

    def stack(keys):
        x = np.concatenate([np.asarray(members[k]["data"], dtype=np.uint8) for k in keys])
        y = np.concatenate([np.asarray(members[k][label_key], dtype=np.int64) for k in keys])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y

    class_names = [n.decode() if isinstance(n, bytes) else n for n in members[meta_key][names_key]]
    return stack(train_keys), stack(test_keys), class_names


# ---------------------------------------------------------------- splits
def _limit(x, y, per_class: int):
    if not per_class:
        return x, y
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    label_mode: str = default("label_mode"),
    val_fraction: float = default("val_fraction"),
    seed: int = default("seed"),
    limit_per_class: int = default("limit_per_class"),
    test_limit_per_class: int = default("test_limit_per_class"),
) -> Splits:
    """Load ``name`` and split its training data into train / validation (stratified, seeded).

    limit_per_class: keep the first N training images of each class (0 = all), for quick runs.
    The defaults are ``RunConfig``'s; a run passes ``RunConfig.data_options()``.
    """
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if name == "digits":
        (x_tr, y_tr), (x_te, y_te), class_names = load_digits_arrays()
    else:
        (x_tr, y_tr), (x_te, y_te), class_names = load_cifar_arrays(name, data_dir, label_mode)
    x_tr, y_tr = _limit(x_tr, y_tr, limit_per_class)
    x_te, y_te = _limit(x_te, y_te, test_limit_per_class)
    n_classes = len(class_names)
    n_val = int(np.ceil(val_fraction * len(y_tr)))
    if np.bincount(y_tr, minlength=n_classes).min() < 2 or n_val < n_classes or len(y_tr) - n_val < n_classes:
        raise DatasetError(
            f"limit_per_class={limit_per_class} with val_fraction={val_fraction} leaves too few "
            f"training images for a stratified validation split of {n_classes} classes; use "
            f"limit_per_class >= {int(np.ceil(2 / min(val_fraction, 1 - val_fraction)))} or 0 (all)"
        )
    x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=val_fraction, stratify=y_tr, random_state=seed)
    return Splits(
        dataset_label(name, label_mode),
        class_names,
        x_tr,
        y_tr,
        x_va,
        y_va,
        x_te,
        y_te,
        info=dict(dataset=name, label_mode=label_mode, seed=seed, val_fraction=val_fraction),
    )
