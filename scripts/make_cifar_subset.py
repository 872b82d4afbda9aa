"""A stratified, seeded CIFAR subset in the official python-archive layout (what a GPU check brings along).

    python scripts/make_cifar_subset.py SRC_ARCHIVE OUT_DIR [--train 3000] [--test 500] [--seed 0]

SRC_ARCHIVE is an official ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz`` (or a subset of
one in the same layout, such as shared/data's). OUT_DIR gets an archive of the same file name and
layout, which the workbook's ``data_dir`` loading (``elastic_lib.data.arrays.load_cifar_arrays``)
reads unchanged:

- CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` (the training
  images split into five batches), ``test_batch``, ``batches.meta`` and a short ``readme.html``;
- CIFAR-100: ``cifar-100-python/`` with ``train``, ``test``, ``meta`` and ``readme.html``.

Each member is a protocol-2 pickle of a dict with bytes keys, written the way the official
(Python 2) files were: strings as py2 ``str`` (``pickle.load(f, encoding="bytes")`` gives bytes,
``encoding="latin1"`` gives str) and ``data`` an uint8 array of shape (n, 3072) referencing
``numpy.core.multiarray._reconstruct``. Every field of the source is kept for the chosen images
(filenames, coarse labels ...). The subset is stratified: ``N // classes`` images per class (CIFAR-100:
per fine class), the remainder one more each for classes drawn with the seed; which images is drawn
with the seed too, and the result is shuffled (so no prefix is one class). Archives are byte-for-byte
reproducible (fixed mtimes and owners, gzip mtime 0).

``OUT_DIR/SHA256SUMS`` gets the new archive's line (others kept): the loader checks an archive
against a SHA256SUMS beside it, or else one folder up, by file name, so without its own line a
subset written next to the official archive's SHA256SUMS would be refused as corrupt.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from elastic_lib.control.datasets import _CIFAR  # noqa: E402
from elastic_lib.data.arrays import _read_cifar_members  # noqa: E402

MTIME = 1262304000  # 2010-01-01, as shared/data's subsets
README = (
    "<html><body><p>A stratified subset of {name} ({train} training and {test} test images, seed {seed}), "
    "made by scripts/make_cifar_subset.py from {source}, in the official python layout. Not the full "
    "dataset: its accuracies are not comparable with published CIFAR results. CIFAR: Alex Krizhevsky, "
    "Learning Multiple Layers of Features from Tiny Images, 2009.</p></body></html>\n"
)
LAYOUT = {  # name: (train members, test member, meta member, label key to stratify on)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", "labels"),
    "cifar100": (["train"], "test", "meta", "fine_labels"),
}


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: bytes as py2 ``str`` (no ``_codecs.encode`` detour, no size
    overhead) and numpy arrays through ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()
    _RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is self._RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(d: dict) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({k.encode(): v for k, v in d.items()})
    return buf.getvalue()


def detect(source: str) -> str:
    base = os.path.basename(source)
    for name, spec in _CIFAR.items():
        if base == spec["archive"] or base == spec["folder"]:
            return name
    raise SystemExit(f"{source}: expected {' or '.join(s['archive'] for s in _CIFAR.values())} (official names)")


def stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, ``n // classes`` per class plus one for ``n % classes`` seeded classes, shuffled."""
    classes = np.unique(labels)
    per = np.full(len(classes), n // len(classes))
    per[rng.choice(len(classes), n % len(classes), replace=False)] += 1
    picks = []
    for c, k in zip(classes, per):
        pool = np.flatnonzero(labels == c)
        if k > len(pool):
            raise SystemExit(f"class {c} has {len(pool)} images, {k} wanted: ask for fewer")
        picks.append(rng.choice(pool, k, replace=False))
    return rng.permutation(np.concatenate(picks))


def take(d: dict, idx: np.ndarray, batch_label: bytes) -> dict:
    """The fields of one official batch dict for images ``idx`` (key order kept)."""
    out = {}
    for k, v in d.items():
        if k == "batch_label":
            out[k] = batch_label
        elif isinstance(v, np.ndarray):
            out[k] = np.ascontiguousarray(v[idx])
        else:
            out[k] = [v[i] for i in idx]
    return out


def concat(parts: list[dict]) -> dict:
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], np.ndarray):
            out[k] = np.concatenate(vals)
        elif isinstance(vals[0], list):
            out[k] = [x for v in vals for x in v]
        else:
            out[k] = vals[0]
    return out


def make_subset(source: str, out_dir: str, n_train: int = 3000, n_test: int = 500, seed: int = 0) -> str:
    """Write the subset archive into ``out_dir``; returns its path."""
    name = detect(source)
    spec, (train_keys, test_key, meta_key, label_key) = _CIFAR[name], LAYOUT[name]
    members = _read_cifar_members(source, spec["folder"])
    have_train = sorted(k for k in members if k.startswith("data_batch_")) if name == "cifar10" else ["train"]
    missing = [k for k in have_train + [test_key, meta_key] if k not in members]
    if missing or not have_train:
        raise SystemExit(f"{source} lacks {missing or 'training batches'}: not a {name} python-layout archive")
    train = concat([members[k] for k in have_train])
    test = members[test_key]
    rng = np.random.default_rng(seed)
    tr_idx = stratified(np.asarray(train[label_key]), n_train, rng)
    te_idx = stratified(np.asarray(test[label_key]), n_test, rng)
    files = {}
    if name == "cifar10":
        chunks = np.array_split(tr_idx, len(train_keys))
        for i, (key, chunk) in enumerate(zip(train_keys, chunks), 1):
            files[key] = take(train, chunk, f"training batch {i} of {len(train_keys)}".encode())
        meta = dict(members[meta_key])
        meta["num_cases_per_batch"] = len(chunks[0])
    else:
        files["train"] = take(train, tr_idx, b"training batch 1 of 1")
        meta = members[meta_key]
    files[test_key] = take(test, te_idx, b"testing batch 1 of 1")
    files[meta_key] = meta
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, spec["archive"])
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        readme = README.format(name=name, train=n_train, test=n_test, seed=seed, source=os.path.basename(source))
        entries = [(key, py2_pickle(d)) for key, d in files.items()] + [("readme.html", readme.encode())]
        for key, blob in entries:
            info = tarfile.TarInfo(f"{spec['folder']}/{key}")
            info.size, info.mtime, info.mode, info.uid, info.gid = len(blob), MTIME, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(blob))
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(tar_buf.getvalue())
    os.replace(tmp, path)
    _write_sum(path)
    return path


def _write_sum(path: str) -> None:
    """OUT_DIR/SHA256SUMS: this archive's line replaced or added, the other lines kept."""
    sums = os.path.join(os.path.dirname(path), "SHA256SUMS")
    base = os.path.basename(path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    lines = []
    if os.path.isfile(sums):
        with open(sums) as f:
            lines = [ln for ln in f.read().splitlines() if ln.split()[-1:] != [base] and ln.strip()]
    with open(sums + ".tmp", "w") as f:
        f.write("\n".join([*lines, f"{digest}  {base}"]) + "\n")
    os.replace(sums + ".tmp", sums)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("source", help="cifar-10-python.tar.gz or cifar-100-python.tar.gz (official layout)")
    ap.add_argument("out_dir", help="folder for the subset archive (the run's data_dir)")
    ap.add_argument("--train", type=int, default=3000, help="training images (default 3000)")
    ap.add_argument("--test", type=int, default=500, help="test images (default 500)")
    ap.add_argument("--seed", type=int, default=0, help="which images and their order (default 0)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    path = make_subset(args.source, args.out_dir, args.train, args.test, args.seed)
    size = os.path.getsize(path)
    print(
        f"{path}: {args.train} train + {args.test} test images, {size:,} bytes ({size / 2**20:.2f} MiB), "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
