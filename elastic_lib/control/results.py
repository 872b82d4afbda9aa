"""Run directories: atomic CSV/YAML writes, completion markers, locks, and collecting a profile.

Layout: ``results/<profile>/<backbone>__<dataset>__<variant>[__seed<N>]/`` with
``params.yaml``, ``notebook.ipynb``, ``history.csv``, ``exits.csv``, ``per_class.csv``,
``confusion.csv``, ``predictions.csv``, ``complexity.csv``, ``early_exit.csv``, ``early_exit_summary.csv``,
``exit_rates.csv``, ``latency.csv``, ``same_depth.csv`` (optional), then ``DONE`` (last).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import socket
import tempfile
import time

import pandas as pd
import yaml

from elastic_lib.control.datasets import dataset_label
from elastic_lib.control.paths import ROOT

DONE = "DONE"
FAILED = "FAILED"
FLOAT_FORMAT = "%.6g"


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to a temp file in the same folder, fsync, then rename over ``path``. The
    file gets the mode a plain ``open`` would give (0666 minus the umask: 0644 typically), not
    the temp file's private 0600, so group members on shared storage can read results."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def to_csv_text(df: pd.DataFrame, sort_by: list[str] | None = None) -> str:
    """Flat columns, deterministic row order, fixed float precision."""
    if sort_by:
        df = df.sort_values(sort_by, kind="stable")
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_csv(run_dir: str, name: str, df: pd.DataFrame, sort_by: list[str] | None = None) -> str:
    path = os.path.join(run_dir, name)
    atomic_write_text(path, to_csv_text(df, sort_by))
    return path


def write_params(
    run_dir: str,
    params: dict,
    plumbing: dict | None = None,
    determinism: dict | None = None,
    environment: dict | None = None,
) -> str:
    """params.yaml: the experiment's resolved parameters; apart from them the plumbing (paths,
    devices, DONE handling), the library versions and commit, the machine (CPU, oneDNN ISA,
    threads, devices, TensorFlow build) and the determinism settings."""
    doc = {"parameters": params}
    if plumbing is not None:
        doc["plumbing"] = plumbing
    if environment is not None:  # elastic_lib.control.environment.record()
        doc["environment"] = environment
    if determinism is not None:
        doc["determinism"] = determinism
    path = os.path.join(run_dir, "params.yaml")
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=True))
    return path


def mark_done(run_dir: str) -> None:
    """Written last: a run directory without DONE is incomplete and will be rerun."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(run_dir, FAILED))
    atomic_write_text(os.path.join(run_dir, DONE), "ok\n")


def mark_failed(run_dir: str, message: str) -> None:
    atomic_write_text(os.path.join(run_dir, FAILED), message.rstrip() + "\n")


def is_done(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, DONE))


RUN_OUTPUTS = (
    "*.csv",
    "*.png",
    "*.svg",
    "params.yaml",
    "progress.json",
    "notebook.ipynb",
    "model.weights.h5",
    DONE,
    FAILED,
    ".tmp_*",
)


def remove_tree(path: str) -> None:
    """Remove a folder so that a kill at any moment leaves either all of it or none of it: it is
    renamed first (atomic), then deleted; leftovers of an interrupted deletion (``*.removing-*``
    beside it) go too."""
    import shutil

    parent, name = os.path.split(os.path.abspath(path))
    if os.path.isdir(path):
        doomed = os.path.join(parent, f"{name}.removing-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    for old in glob.glob(os.path.join(parent, f"{name}.removing-*")):
        shutil.rmtree(old, ignore_errors=True)


def clear_run(run_dir: str) -> None:
    """Remove a run's outputs (only the files a run writes) so a rerun starts clean and no
    CSV is ever appended to. The DONE marker goes first: a run is never DONE with files missing."""
    for pattern in (DONE, FAILED) + RUN_OUTPUTS:
        for path in glob.glob(os.path.join(run_dir, pattern)):
            if os.path.isfile(path):
                os.remove(path)


class LockUnsupportedError(RuntimeError):
    """The filesystem refuses flock: the driver stops rather than run unlocked."""


# flock errors that mean "this filesystem does not do locks" rather than "someone holds it"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF}


def try_lock(path: str) -> int | None:
    """Exclusive, non-blocking advisory lock (``flock``) on ``path``/.lock: the open file
    descriptor (close it to release; a child process given it keeps the lock), or None if
    another process holds it. The lock file records the holder (host and pid). On a shared
    filesystem this relies on flock being coherent across nodes (local disks, NFSv4, Lustre
    mounted with ``-o flock``, GPFS, BeeGFS do this); where the filesystem refuses flock,
    ``LockUnsupportedError`` says so instead of running unlocked."""
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return None
        if err.errno in _NO_LOCKS:
            raise LockUnsupportedError(
                f"the filesystem under {path} refuses flock ({errno.errorcode.get(err.errno, err.errno)}: "
                f"{os.strerror(err.errno)}); ./run_all.sh will not run unlocked, since two drivers could then "
                "write the same run. Put --results-root on a filesystem with flock support (local disk, NFSv4, "
                "Lustre mounted with -o flock), or mount this one with locking enabled"
            ) from err
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode())
    return fd


def lock_holder(path: str) -> str:
    """Who holds (or last held) the run directory's lock, as recorded in its .lock file."""
    try:
        with open(os.path.join(path, ".lock")) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------- collecting
def completed_runs(profile_dir: str) -> list[str]:
    return sorted(d for d in glob.glob(os.path.join(profile_dir, "*")) if os.path.isdir(d) and is_done(d))


def read_params_yaml(run_dir: str) -> dict:
    """A run's whole params.yaml: parameters, plumbing, environment, determinism."""
    with open(os.path.join(run_dir, "params.yaml")) as f:
        return yaml.safe_load(f) or {}


def read_params(run_dir: str, with_plumbing: bool = False, doc: dict | None = None) -> dict:
    """The experiment parameters of a run (with its plumbing too: enough to rebuild its RunConfig);
    ``doc``: its params.yaml already read."""
    doc = doc or read_params_yaml(run_dir)
    return {**doc["parameters"], **(doc.get("plumbing") or {})} if with_plumbing else doc["parameters"]


def repo_relative(path: str) -> str:
    """Paths inside the repo relative to it (notebooks run with the repo root as working
    directory), so that executed notebooks and tables do not record this machine's layout."""
    if not path:
        return path
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def machines(profile_dir: str) -> list[str]:
    """The machines behind a profile's completed runs (CPU, oneDNN ISA, cores), one entry each."""
    from elastic_lib.control.environment import machine_label

    seen = []
    for run_dir in completed_runs(profile_dir):
        info = (read_params_yaml(run_dir).get("environment") or {}).get("machine")
        label = machine_label(info) if info else "unrecorded machine"
        if label not in seen:
            seen.append(label)
    return seen


def collect(profile_dir: str, name: str) -> pd.DataFrame:
    """Concatenate ``name`` over every completed run of a profile, with the run's identity
    (run, backbone, dataset, variant, seed) in front."""
    frames = []
    for run_dir in completed_runs(profile_dir):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            continue
        p = read_params(run_dir)
        df = pd.read_csv(path)
        ident = {
            "run": os.path.basename(run_dir),
            "backbone": p["backbone"],
            "dataset": dataset_label(p["dataset"], p.get("label_mode", "fine")),
            "variant": p["variant"],
            "seed": p["seed"],
        }
        for i, (k, v) in enumerate(ident.items()):
            df.insert(i, k, v)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
