"""Dataset files: where the CIFAR archives are and which datasets exist (no arrays, no Keras).

The control plane checks a run's ``data_dir`` and fingerprints the data through this module
before anything is built; ``elastic_lib.data`` reads the arrays (and downloads when allowed).
"""

from __future__ import annotations

import glob
import os

DATASETS = ("digits", "cifar10", "cifar100")
LABEL_MODES = ("fine", "coarse")


_CIFAR = {
    "cifar10": dict(
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "cifar100": dict(
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    ),
}


class DatasetError(ValueError):
    """A dataset that cannot be found, downloaded or read; the message says what to do."""


def _find(data_dir: str, name: str) -> str | None:
    for pattern in (name, os.path.join("*", name), os.path.join("*", "*", name)):
        hits = sorted(glob.glob(os.path.join(data_dir, pattern)))
        if hits:
            return hits[0]
    return None


def keras_home() -> str:
    """Where downloads are cached and looked up: $KERAS_HOME or ~/.keras (read at call time)."""
    return os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))


def check_data_dir(name: str, data_dir: str) -> None:
    """A data_dir must be an existing folder (checked before anything is built or trained)."""
    spec = _CIFAR[name]
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"data_dir {data_dir!r} does not exist; it must be a folder holding {spec['archive']} "
            f"or its extracted {spec['folder']}/ folder"
        )


def locate_cifar(name: str, data_dir: str | None = None) -> str | None:
    """Path of the CIFAR archive or extracted folder: ``data_dir``, $ELASTIC_DATA_DIR, the Keras
    cache (~/.keras/datasets); None if it is in none of them (``elastic_lib.data`` then downloads)."""
    spec = _CIFAR[name]
    data_dir = data_dir or os.environ.get("ELASTIC_DATA_DIR") or None
    if data_dir:
        check_data_dir(name, data_dir)
        hit = _find(data_dir, spec["folder"]) or _find(data_dir, spec["archive"])
        if hit is None:
            raise DatasetError(
                f"no {name} data in data_dir {data_dir!r}: expected {spec['archive']} or an extracted "
                f"{spec['folder']}/ folder (the official 'python version' from "
                f"https://www.cs.toronto.edu/~kriz/cifar.html)"
            )
        return hit
    cache = os.path.join(keras_home(), "datasets")
    for candidate in (os.path.join(cache, spec["folder"]), os.path.join(cache, spec["archive"])):
        if os.path.exists(candidate):
            return candidate
    return None


def dataset_label(dataset: str, label_mode: str = "fine") -> str:
    """Dataset name as used in run ids and tables: CIFAR-100 with coarse labels is its own dataset."""
    return dataset if dataset != "cifar100" or label_mode == "fine" else "cifar100coarse"
