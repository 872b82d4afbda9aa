"""elastic_lib: Elastic Neural Networks (Zhou et al., arXiv:1810.00589) on Keras 3."""
import os as _os

# Before TensorFlow is imported anywhere: quiet, reproducible CPU numerics.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as _tf  # noqa: E402

_tf.get_logger().setLevel("ERROR")  # retracing / deprecation chatter breaks nbval comparisons

from .backbones import get_backbone, list_backbones  # noqa: E402
from .exits import build_elastic_model, exit_taps  # noqa: E402

__all__ = ["build_elastic_model", "exit_taps", "get_backbone", "list_backbones"]
__version__ = "0.1.0"
