"""Figure 8: the Keras backends side by side.

Train steps/s and predict time per batch of the elastic MobileNet-0.75 (13 exits + final head,
summed cross-entropies, SGD) at 32x32, batch 32, on one fixed random batch, each backend in its own
interpreter and environment (``scripts/env.sh``: ``.venv`` for TensorFlow, ``.venv-jax``,
``.venv-torch``), in interleaved rounds (TensorFlow, JAX, PyTorch, TensorFlow, ...) so that a
change of machine load hits every side alike; per backend the median over rounds of the steady-state
rates (``train_on_batch`` / ``predict_on_batch`` after warm-up). Ratio = the backend's train steps/s
over TensorFlow's, measured in this run. No target: TensorFlow stays the CPU default, the others
are for GPU machines without TensorFlow; the figure says what choosing them costs on this CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .common import ROOT, log, median

BACKENDS = ("tensorflow", "jax", "torch")
WORKER = r"""
import json, sys, time
import numpy as np, keras
from elastic_lib.models.exits import build_elastic_model
from elastic_lib.control.config import RunConfig
from elastic_lib.train.training import compile_model
steps, batch = int(sys.argv[1]), 32
keras.utils.set_random_seed(0)
model = build_elastic_model("mobilenet_0.75", 10, 32, exits="all")
compile_model(model, 0.01, RunConfig(), metrics="final")
rng = np.random.default_rng(0)
x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
ys = [rng.integers(0, 10, batch)] * len(model.outputs)
for _ in range(3):
    model.train_on_batch(x, ys)
    model.predict_on_batch(x)
t0 = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, ys)
train = steps / (time.perf_counter() - t0)
t0 = time.perf_counter()
for _ in range(steps):
    keras.ops.convert_to_numpy(model.predict_on_batch(x)[-1])
predict_ms = 1e3 * (time.perf_counter() - t0) / steps
from elastic_lib.control import backend
print(json.dumps({"train_steps_per_s": train, "predict_ms_per_batch": predict_ms, "keras": keras.__version__,
                  "version": backend.version()}))
"""


def python_of(backend: str) -> str | None:
    """The interpreter of ``backend``'s environment (None when it is not set up)."""
    venv = ".venv" if backend == "tensorflow" else f".venv-{backend}"
    path = os.path.join(ROOT, venv, "bin", "python")
    if os.path.exists(path):
        return path
    return sys.executable if os.environ.get("KERAS_BACKEND", "tensorflow") == backend else None


def measure(backend: str, steps: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "ELASTIC_BACKEND": backend, "PYTHONPATH": ROOT}
    proc = subprocess.run(
        [python_of(backend), "-c", WORKER, str(steps)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    if proc.returncode:
        raise RuntimeError(f"{backend} worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    available = [b for b in BACKENDS if python_of(b)]
    figure = "8. Keras backends: train steps/s vs TensorFlow (MobileNet-0.75 elastic, 32x32, batch 32)"
    if "tensorflow" not in available:
        return {
            "figure": figure,
            "data": "random batch",
            "measured": "-",
            "target": "none (measured only)",
            "pass": None,
            "verdict": "skipped: no TensorFlow environment to compare with",
        }
    rounds, steps = (1, 5) if quick else (3, 30)
    got = {b: [] for b in available}
    for r in range(rounds):
        for b in available:
            log(f"backends: round {r + 1}/{rounds}, {b}")
            got[b].append(measure(b, steps))
    row = {
        "backends": ", ".join(available),
        "rounds": rounds,
        "steps_per_round": steps,
        "missing": ", ".join(b for b in BACKENDS if b not in available) or "none",
    }
    tf_rate = median([g["train_steps_per_s"] for g in got["tensorflow"]])
    for b in available:
        rate = median([g["train_steps_per_s"] for g in got[b]])
        row[f"{b}_version"] = got[b][0].get("version", "")
        row[f"{b}_train_steps_per_s"] = rate
        row[f"{b}_predict_ms_per_batch"] = median([g["predict_ms_per_batch"] for g in got[b]])
        row[f"{b}_train_ratio_vs_tensorflow"] = rate / tf_rate
    others = [f"{b} {row[f'{b}_train_ratio_vs_tensorflow']:.2f}x" for b in available if b != "tensorflow"]
    measured = ", ".join(others) or "no other backend set up"
    return {
        "figure": figure,
        "data": "one fixed random batch",
        "rows": [row],
        "measured": measured,
        "target": "none (measured only)",
        "pass": None,
        "verdict": "train speed vs TensorFlow: " + measured,
    }
