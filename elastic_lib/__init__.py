"""elastic_lib: Elastic Neural Networks (Zhou et al., arXiv:1810.00589) on Keras 3.

Importing the package is light (no TensorFlow, no Keras): the control plane (``config``,
``batch``, ``results``) stays fast; the model-building names below load Keras on first use.
"""
import logging as _logging
import os as _os

__version__ = "0.1.0"
__all__ = ["build_elastic_model", "exit_taps", "get_backbone", "list_backbones", "setup_environment"]


def setup_environment() -> None:
    """The one environment setup (before TensorFlow is imported anywhere): quiet logs and
    TensorFlow's own oneDNN graph rewrites off, Keras on ``ELASTIC_BACKEND`` (default TensorFlow)
    unless ``KERAS_BACKEND`` says otherwise. (``scripts/env.sh`` exports the same for the shell.)
    Existing settings are kept."""
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _os.environ.setdefault("KERAS_BACKEND", _os.environ.get("ELASTIC_BACKEND", "tensorflow"))
    if _os.environ["KERAS_BACKEND"] == "jax" and "--xla_gpu_deterministic_ops" not in _os.environ.get("XLA_FLAGS", ""):
        # JAX on a GPU: reproducible reductions (XLA on CPU is deterministic already)
        _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    _os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # PyTorch deterministic cuBLAS
    _logging.getLogger("tensorflow").setLevel(_logging.ERROR)  # retracing chatter breaks nbval comparisons


setup_environment()


def __getattr__(name):
    if name in ("build_elastic_model", "exit_taps"):
        from . import exits

        return getattr(exits, name)
    if name in ("get_backbone", "list_backbones"):
        from . import backbones

        return getattr(backbones, name)
    raise AttributeError(f"module 'elastic_lib' has no attribute {name!r}")
