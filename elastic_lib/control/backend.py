"""Which Keras 3 backend runs the compute plane, and the few things that differ between them.

The workbook is written against Keras (``keras.ops``, layers, ``fit``); the backend is chosen by
``KERAS_BACKEND`` (``ELASTIC_BACKEND`` for ``./run_all.sh`` and ``./run_tests.sh``, which install
that backend), TensorFlow by default. What only TensorFlow has (the ``tf.data`` input path,
SavedModel and TensorFlow Lite export, the ``tf.profiler`` FLOPs check, ``tf.distribute``, the
``tf.cond`` staged forward) calls ``require_tensorflow`` first, so another backend gets a clear
error that names the backend it needs. Importing this module imports no backend.
"""

from __future__ import annotations

import importlib.metadata
import os

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
# the distributions that carry each backend's module (the first one installed is reported)
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"),
    "jax": ("jax",),
    "torch": ("torch",),
}


class BackendError(RuntimeError):
    """A feature that the active Keras backend does not have; the message says which one does."""


def name() -> str:
    """The backend Keras runs on (``KERAS_BACKEND``, else TensorFlow), read without importing Keras."""
    chosen = os.environ.get("KERAS_BACKEND", DEFAULT)
    if chosen not in BACKENDS:
        raise BackendError(f"KERAS_BACKEND={chosen!r} is not supported; use one of {', '.join(BACKENDS)}")
    return chosen


def version(backend: str | None = None) -> str:
    """The installed version of ``backend``'s package (from its metadata: nothing is imported)."""
    backend = backend or name()
    for dist in _DISTRIBUTIONS[backend]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


PRETTY = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def label(backend: str | None = None, version_: str | None = None) -> str:
    """``"JAX 0.10.2"``: a backend and its version (default: the installed one) as captions print them."""
    backend = backend or name()
    return f"{PRETTY[backend]} {version_ or version(backend)}"


def recorded(environment: dict) -> str:
    """The backend label of a run's recorded ``environment`` (params.yaml); runs made before the
    backend was recorded ran on TensorFlow, whose version they recorded."""
    if "keras_backend" in environment:
        return label(environment["keras_backend"], environment.get("backend_version") or "?")
    return label("tensorflow", environment.get("tensorflow") or "?")


def require_tensorflow(feature: str) -> None:
    """Refuse ``feature`` (a TensorFlow-only step) early on another backend."""
    current = name()
    if current != "tensorflow":
        raise BackendError(
            f"{feature} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs "
            f"Keras on {current}. Run it with ELASTIC_BACKEND=tensorflow, or leave it out "
            "(its backend-neutral alternative is named in the docs of the function that raised this)"
        )
