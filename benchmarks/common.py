"""Shared helpers: timing (warm-up, repeats, median, interleaved A/B), data, machine info."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
CIFAR10_ARCHIVE = os.path.join(SHARED_DATA, "cifar10-subset", "cifar-10-python.tar.gz")
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line on stderr with the time since the benchmarks started."""
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- timing
def median(xs) -> float:
    return float(statistics.median(xs))


def time_blocks(fn: Callable[[], int | None], warmup: int = 1, repeats: int = 5) -> list[float]:
    """Seconds per unit of work for each of ``repeats`` calls of ``fn`` after ``warmup`` calls.

    ``fn`` does one timed block and returns how many units (steps, images, ...) it did
    (None = 1); its result must already be on the host (synchronised)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn() or 1
        out.append((time.perf_counter() - t0) / n)
    return out


def time_interleaved(
    fns: dict[str, Callable[[], int | float | None]], warmup: int = 1, repeats: int = 5, self_timed: bool = False
) -> dict[str, list[float]]:
    """Like ``time_blocks`` for several candidates, run round-robin (A B C, C B A, ...) so that
    load changes on a shared machine hit every candidate alike. Seconds per unit, per repeat.
    self_timed: each ``fn`` returns its own seconds per unit instead of a unit count."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # no candidate always goes first
        for k in order:
            t0 = time.perf_counter()
            n = fns[k]()
            out[k].append(float(n) if self_timed else (time.perf_counter() - t0) / (n or 1))
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-repeat ratios (each repeat's pair ran back to back)."""
    return median([a / b for a, b in zip(num, den)])


def spread(xs) -> float:
    """(max - min) / median, a crude noise indicator."""
    return (max(xs) - min(xs)) / median(xs) if xs else float("nan")


def fit_step_seconds(model, ds, steps: int, skip_first: int = 0) -> float:
    """Seconds per training step of ``model.fit(ds, steps_per_epoch=steps)``, from the wall-clock
    between consecutive ``on_train_batch_begin`` calls (synchronous in Keras 3): whole steps,
    without fit's per-call setup and per-epoch metric read-out. skip_first: leading intervals
    to drop (e.g. 1 when this call also traces the train function)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        async_safe = True  # keeps Keras' asynchronous batch-end dispatch, as without callbacks

        def __init__(self):
            super().__init__()
            self.stamps: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.stamps.append(time.perf_counter())

    timer = StepTimer()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    s = timer.stamps[skip_first:]
    # n begin stamps + 1 end stamp: begin[0] -> begin[n-1] is n-1 whole steps; with a single
    # step, fall back to begin -> train end (includes the epoch-end read-out)
    return (s[-2] - s[0]) / (len(s) - 2) if len(s) >= 3 else s[-1] - s[0]


def clear_keras() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


# ---------------------------------------------------------------- data
def trained_run(rel: str) -> str | None:
    """A finished run ``<profile>/<run>`` with its weights (not committed): this machine's copy under
    ``results/interactive/`` (``./run_all.sh --results-root results/interactive``) first, then the
    committed run folder; None when neither has ``model.weights.h5``."""
    for root in (os.path.join(ROOT, "results", "interactive"), os.path.join(ROOT, "results")):
        d = os.path.join(root, rel)
        if os.path.isfile(os.path.join(d, "model.weights.h5")):
            return d
    return None


def load_images(limit: int | None = None):
    """(x, y, label): the CIFAR-10 subset's train + val images (10,000, uint8 32x32) from
    ../shared/data if present, else scikit-learn's digits (1,437 train + val, 8x8)."""
    from elastic_lib.data.arrays import load_dataset

    if os.path.isfile(CIFAR10_ARCHIVE):
        s = load_dataset("cifar10", data_dir=os.path.dirname(CIFAR10_ARCHIVE))
        label = "CIFAR-10 subset (train+val)"
    else:
        s = load_dataset("digits")
        label = "digits (train+val; CIFAR-10 subset not found)"
    x = np.concatenate([s.x_train, s.x_val])
    y = np.concatenate([s.y_train, s.y_val])
    if limit:
        x, y = x[:limit], y[:limit]
    return x, y, label


# ---------------------------------------------------------------- machine info
def _mem_total_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return (out + (" (+uncommitted changes)" if dirty else "")) if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    """The command as typed (python -m benchmarks ...), for reproduction."""
    argv = sys.argv[:]
    if argv and argv[0].endswith(os.path.join("benchmarks", "__main__.py")):
        argv = ["-m", "benchmarks"] + argv[1:]
    env = " ".join(f"{k}={os.environ[k]}" for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL") if k in os.environ)
    py = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable
    return f"{env} {py} " + " ".join(shlex.quote(a) for a in argv)  # from the repo root


def machine_info() -> dict:
    import keras
    import tensorflow as tf

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    from elastic_lib.control.environment import cpu_model, effective_onednn_isa

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "onednn_isa": effective_onednn_isa(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "ram_gb": round(_mem_total_gb(), 1),
        "loadavg_1_5_15": tuple(round(v, 2) for v in os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "tf_threads_intra_inter": (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        ),
        "env": {k: os.environ.get(k, "") for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")},
        "command": command_line(),
    }


def fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        if np.isnan(v):
            return "n/a"
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def standalone(run: Callable[[bool], dict]) -> None:
    """``python -m benchmarks.<figure> [--quick]``: run one figure and print its raw values."""
    import argparse
    import json

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    print(json.dumps(run(p.parse_args().quick), indent=1, default=str))
