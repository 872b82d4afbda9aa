"""The Keras backend at run time: seeds and op determinism, the devices and build it runs on, and
a compiled forward pass for latency. The compute plane's lowest module (it imports the backend);
``elastic_lib.control.environment`` records what it reports.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import random
import sys

from elastic_lib.control import backend, environment


def set_determinism(seed: int, mode: str = "strict") -> dict:
    """Seed Python, NumPy and the Keras backend and switch the backend's determinism for ``mode``
    (``elastic_lib.control.environment.plan_determinism``: strict | auto | off); return the settings
    as they are now, for params.yaml. Called where a run starts (Experiment.setup)."""
    import keras

    plan = environment.determinism_plan(mode)
    random.seed(seed)
    keras.utils.set_random_seed(seed)  # Python, NumPy and backend seeds
    settings = {
        "seed": seed,
        "keras_backend": keras.backend.backend(),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED", ""),
    }
    strict = plan["strict_kernels"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if strict:
            tf.config.experimental.enable_op_determinism()
        settings["tf_op_determinism"] = strict
        if not strict and mode == "auto":  # cuDNN's deterministic convolution and pooling algorithms
            os.environ["TF_CUDNN_DETERMINISTIC"] = "1"
            settings["tf_cudnn_deterministic"] = True
    elif keras.backend.backend() == "torch":
        import torch

        if mode != "off":
            torch.use_deterministic_algorithms(True, warn_only=not strict)
        settings["torch_deterministic_algorithms"] = True if strict else ("warn_only" if mode == "auto" else False)
    else:  # JAX: XLA on CPU is deterministic; on GPU the flag set by setup_environment() makes it so
        settings["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    if plan["nondeterministic_ops"]:
        settings["nondeterministic_ops"] = plan["nondeterministic_ops"]
    return settings


def set_float32_matmul(allow_tf32: bool) -> dict:
    """float32 matmuls and convolutions as true float32, or TF32 where ``allow_tf32`` (Ampere and
    newer NVIDIA GPUs; JAX and TensorFlow use TF32 there by default). CPUs compute float32 as
    float32 either way. Returns what params.yaml's machine record keeps."""
    current = backend.name()
    if current == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
    elif current == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    else:
        import jax

        if any(d.platform == "gpu" for d in jax.devices()):  # on CPU the setting is left alone
            jax.config.update("jax_default_matmul_precision", "tensorfloat32" if allow_tf32 else "highest")
    return {"float32_matmul": "TF32 allowed" if allow_tf32 else "float32"}


def probe_determinism() -> list[str]:
    """Which of ``environment.PROBE_OPS`` fail or differ between two runs under the backend's
    strict determinism switches, on the first device (run in a fresh process by
    ``environment.nondeterministic_ops``, with the switches set)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if backend.name() == "tensorflow":  # the strict switches (JAX's XLA flag is set by the caller)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend.name() == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32, 32, 8)).astype("float32")
    layers = {
        "conv_grad": keras.layers.Conv2D(8, 3, padding="same"),
        "max_pool_grad": keras.layers.MaxPooling2D(3, 2, padding="same"),
        "avg_pool_grad": keras.layers.AveragePooling2D(3, 2, padding="same"),
        "bilinear_resize_grad": keras.layers.Resizing(64, 64, interpolation="bilinear"),
        "batch_norm_grad": keras.layers.BatchNormalization(),
        "reductions": keras.layers.GlobalAveragePooling2D(),
    }
    failing = []
    for name, layer in layers.items():
        try:
            first, second = (input_gradient(layer, x) for _ in range(2))
            if not np.array_equal(first, second):
                failing.append(name)
        except Exception:
            failing.append(name)
    return failing


def input_gradient(layer, x):
    """d sum(layer(x)^2) / dx with the backend's own autodiff, as NumPy."""
    import numpy as np

    current = backend.name()
    if current == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(tf.square(layer(xt, training=True)))
        return tape.gradient(loss, xt).numpy()
    if current == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True, device="cuda" if torch.cuda.is_available() else "cpu")
        (layer(xt, training=True) ** 2).sum().backward()
        return xt.grad.detach().cpu().numpy()
    import jax

    if not layer.built:
        layer.build(x.shape)
    weights = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    # stateless_call hands ``training`` to ``call`` as it is: only to layers whose call takes it
    kwargs = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}

    def loss(xx):
        out = layer.stateless_call(weights, frozen, xx, **kwargs)[0]
        return (out**2).sum()

    return np.asarray(jax.grad(loss)(jax.numpy.asarray(x)))


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
