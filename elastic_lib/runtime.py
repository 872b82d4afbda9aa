"""The Keras backend at run time: seeds and op determinism, the devices and build it runs on, and
a compiled forward pass for latency. The compute plane's lowest module (it imports the backend);
``elastic_lib.control.environment`` records what it reports.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import sys

from elastic_lib.control import backend


def set_determinism(seed: int) -> dict:
    """Seed Python, NumPy and the Keras backend, turn on TensorFlow op determinism; return the
    settings as they are now, for params.yaml. Called where a run starts (Experiment.setup)."""
    import keras

    random.seed(seed)
    keras.utils.set_random_seed(seed)  # Python, NumPy and backend seeds
    settings = {
        "seed": seed,
        "keras_backend": keras.backend.backend(),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED", ""),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        settings["tf_op_determinism"] = True
    elif keras.backend.backend() == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
        settings["torch_deterministic_algorithms"] = True
    else:  # JAX: XLA on CPU is deterministic; on GPU the flag set by setup_environment() makes it so
        settings["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return settings


def compiled_forward(model):
    """``x -> model(x, training=False)`` compiled by the backend (``tf.function``, ``jax.jit`` over
    the model's stateless call, ``torch.no_grad`` eager): what latency measurements time."""
    current = backend.name()
    if current == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False))
    if current == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        fn = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
        return lambda x: fn(trainable, frozen, x)
    import torch

    def forward(x):
        with torch.no_grad():
            return model(x, training=False)

    return forward


def backend_details() -> dict:
    """The devices the backend sees and its build, for params.yaml's ``environment.machine``."""
    info = {}
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        info.update(
            {
                "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
                "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
                "devices": ", ".join(_device_name(tf, d) for d in tf.config.list_physical_devices()),
                "tensorflow_build": f"{tf.version.GIT_VERSION}, cuda={build.get('cuda_version', 'none')}, "
                f"cudnn={build.get('cudnn_version', 'none')}",
            }
        )
    elif os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        info.update(
            {
                "devices": ", ".join(f"{d.platform.upper()}:{d.id} ({d.device_kind})" for d in jax.devices()),
                "jax_build": f"jax {jax.__version__}, jaxlib {_dist_version('jaxlib')}",
            }
        )
    elif os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        gpus = [f"GPU:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        info.update(
            {
                "devices": ", ".join(["CPU:0", *gpus]),
                "torch_threads": torch.get_num_threads(),
                "torch_build": f"torch {torch.__version__}, cuda={torch.version.cuda or 'none'}",
            }
        )
    return info


def _device_name(tf, device) -> str:
    name = device.name.replace("/physical_device:", "")
    if device.device_type == "GPU":
        details = tf.config.experimental.get_device_details(device)
        name += f" ({details.get('device_name', 'unknown GPU')})"
    return name


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
