"""The backbone registry: one table, thin lookups by name (timm-style).

Every entry knows its Keras constructor, the rule that picks its default exit
taps (layer names, shallowest first), its minimum input size and its own
``preprocess_input``.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Backbone:
    """One registry entry. Keras is imported only when a model is built or preprocessing runs,
    so the registry itself (names, minimum sizes) is light enough for the control plane."""
    name: str
    app: str | Callable  # keras.applications class name, or a builder (input_shape, weights) -> model
    tap_rule: Callable  # model -> default exit layer names, shallowest first
    min_size: int
    family: str  # keras.applications.<family>.preprocess_input
    paper: bool = False  # in the paper's Table I
    kwargs: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()  # the builder's own options that a run may set (RunConfig fields)
    imagenet: bool = True  # Keras has ImageNet weights for it

    def constructor(self, input_shape, weights, **options):
        """The no-top backbone (``include_top=False``); ``options``: some of ``self.options``."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"{self.name} has no option(s) {unknown}; its options: {list(self.options) or 'none'}")
        if callable(self.app):
            return self.app(input_shape=input_shape, weights=weights, **options)
        import keras

        return getattr(keras.applications, self.app)(include_top=False, weights=weights, input_shape=input_shape,
                                                     **self.kwargs)

    @property
    def preprocess(self) -> Callable:
        return importlib.import_module(f"keras.applications.{self.family}").preprocess_input


# ---------------------------------------------------------------- exit-tap rules
def _names_matching(pattern: str) -> Callable:
    rx = re.compile(pattern)
    return lambda model: [l.name for l in model.layers if rx.fullmatch(l.name)]


def _block_outputs(prefix_rx: str, add_suffix: str = "add"):
    """MobileNetV2 / EfficientNet: each block's output is its residual add if it has one,
    else its projection BatchNorm."""
    rx = re.compile(prefix_rx)

    def rule(model) -> list[str]:
        names = [l.name for l in model.layers]
        present = set(names)
        taps = []
        for n in names:
            m = rx.fullmatch(n)
            if not m:
                continue
            block = m.group(1)
            taps.append(block + add_suffix if block + add_suffix in present else n)
        return taps

    return rule


def _densenet_taps(model) -> list[str]:
    """Every transition block output (poolN_pool) and every dense block's last concat."""
    names = [l.name for l in model.layers]
    last_concat: dict[str, str] = {}
    for n in names:
        m = re.fullmatch(r"(conv\d)_block\d+_concat", n)
        if m:
            last_concat[m.group(1)] = n
    wanted = set(last_concat.values()) | {n for n in names if re.fullmatch(r"pool\d_pool", n)}
    return [n for n in names if n in wanted]


# ---------------------------------------------------------------- constructors
def resnet50_legacy(input_shape=(224, 224, 3), weights=None):
    """ResNet50 as in Keras 2.1.5 (the paper's code): no zero-padding before the first
    3x3/2 max-pool (55x55 maps after it at 224 input) and a 7x7 average pool at the end of
    the backbone. Same parameter count as today's ResNet50; layer names follow today's Keras
    so that today's ImageNet weights load by name."""
    import keras
    from keras import layers

    bn_axis = 3
    inp = keras.Input(shape=input_shape, name="input_layer")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inp)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)  # no padding: 112 -> 55

    def block(x, filters, stride, shortcut, name):
        if shortcut:
            s = layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
            s = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_0_bn")(s)
        else:
            s = x
        x = layers.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_1_bn")(x)
        x = layers.Activation("relu", name=name + "_1_relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_2_bn")(x)
        x = layers.Activation("relu", name=name + "_2_relu")(x)
        x = layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_3_bn")(x)
        x = layers.Add(name=name + "_add")([s, x])
        return layers.Activation("relu", name=name + "_out")(x)

    for stage, (filters, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=2):
        for b in range(1, blocks + 1):
            x = block(x, filters, stride if b == 1 else 1, b == 1, f"conv{stage}_block{b}")
    x = layers.AveragePooling2D(7, name="avg_pool")(x)
    model = keras.Model(inp, x, name="resnet50_legacy")
    if weights == "imagenet":
        donor = keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=input_shape)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(donor.get_layer(layer.name).get_weights())
    elif weights is not None:
        model.load_weights(weights)
    return model


def tiny_cnn(input_shape=(32, 32, 3), weights=None):
    """A toy backbone for tests and demos (timm keeps such ``test_*`` models in its registry too): three
    blocks of 3x3 convolution (8, 16, 32 filters, stride 2, "same" padding) -> BatchNorm -> ReLU, named
    ``block{1,2,3}_conv|_bn|_out``; the exits tap each block's ReLU (``block{1,2,3}_out``). At 16x16 an
    elastic model trains an epoch on a thousand digits in about a second on a CPU core, so tests of the
    driver, faults, resume and provenance run the real experiment notebook in seconds. Not in the paper.

    Input: any size of at least 8x8 (three halvings leave at least one pixel); preprocessing: MobileNet's
    ([-1, 1]). ``weights``: None (random init) or a weights file of this architecture."""
    import keras
    from keras import layers

    x = inp = keras.Input(shape=input_shape, name="input_layer")
    for i, filters in enumerate((8, 16, 32), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.Activation("relu", name=f"block{i}_out")(x)
    model = keras.Model(inp, x, name="tiny_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model


def _inception_v4(input_shape=(299, 299, 3), weights=None, **options):
    from .inception_v4 import InceptionV4

    return InceptionV4(input_shape, weights, **options)


def _efficientnet_b0_cifar(input_shape=(32, 32, 3), weights=None):
    from .efficientnet_cifar import EfficientNetB0Cifar

    return EfficientNetB0Cifar(input_shape, weights)


def _inception_v4_taps(model) -> list[str]:
    from .inception_v4 import block_names

    return block_names()  # stem, every Inception and Reduction block (the last as MobileNet's conv_pw_13 is)


# The original code taps each residual ``add`` (Keras 2.1.5's ``add_N``), before the block's ReLU.
_RESNET_TAPS = _names_matching(r"conv\d_block\d+_add")
_EFFICIENTNET_TAPS = _block_outputs(r"(block\d[a-z]_)project_bn")

REGISTRY: dict[str, Backbone] = {b.name: b for b in [
    Backbone("mobilenet_0.75", "MobileNet", _names_matching(r"conv_pw_\d+_relu"), 32, "mobilenet", True,
             {"alpha": 0.75}),
    Backbone("mobilenet_v2", "MobileNetV2", _block_outputs(r"((?:expanded_conv|block_\d+)_)project_BN"), 32,
             "mobilenet_v2"),
    Backbone("inception_v3", "InceptionV3", _names_matching(r"mixed(\d|10)"), 75, "inception_v3", True),
    Backbone("resnet50", "ResNet50", _RESNET_TAPS, 32, "resnet50", True),
    Backbone("resnet50_legacy", resnet50_legacy, _RESNET_TAPS, 197, "resnet50"),
    Backbone("resnet101", "ResNet101", _RESNET_TAPS, 32, "resnet"),
    Backbone("resnet152", "ResNet152", _RESNET_TAPS, 32, "resnet"),
    Backbone("densenet121", "DenseNet121", _densenet_taps, 32, "densenet", True),
    Backbone("densenet169", "DenseNet169", _densenet_taps, 32, "densenet", True),
    Backbone("densenet201", "DenseNet201", _densenet_taps, 32, "densenet"),
    Backbone("vgg16", "VGG16", _names_matching(r"block\d_pool"), 32, "vgg16", True),
    Backbone("efficientnet_b0", "EfficientNetB0", _EFFICIENTNET_TAPS, 32, "efficientnet"),
    # the studies' backbones (issues 12 and 13): built here, no Keras ImageNet weights
    Backbone("inception_v4", _inception_v4, _inception_v4_taps, 75, "inception_v3",
             options=("bn_epsilon", "count_include_pad"), imagenet=False),
    Backbone("efficientnet_b0_cifar", _efficientnet_b0_cifar, _EFFICIENTNET_TAPS, 32, "efficientnet", imagenet=False),
    # a toy for tests and demos: trains in seconds
    Backbone("tiny_cnn", tiny_cnn, _names_matching(r"block\d_out"), 8, "mobilenet", imagenet=False),
]}


def list_backbones() -> list[str]:
    """Names of every supported backbone, in registry order."""
    return list(REGISTRY)


def get_backbone(name: str) -> Backbone:
    """Registry lookup with a clear error listing the valid names."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(REGISTRY)}") from None


def check_image_size(name: str, image_size: int) -> None:
    b = get_backbone(name)
    if not isinstance(image_size, int) or isinstance(image_size, bool):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if image_size < b.min_size:
        raise ValueError(f"image_size={image_size} is below {name}'s minimum input size {b.min_size}; "
                         f"use image_size >= {b.min_size} (the paper used 224)")


def weights_file(weights_dir: str, name: str) -> str:
    """Where ``python -m elastic_lib.weights download`` keeps ``name``'s ImageNet no-top weights."""
    return os.path.join(weights_dir, f"{name}_imagenet_notop.weights.h5")


def check_weights(name: str, weights) -> None:
    """None (random init), "imagenet" (Keras download) or an existing local weights file."""
    if weights == "imagenet" and not get_backbone(name).imagenet:
        raise ValueError(f"{name} has no Keras ImageNet weights: use random init ('') or a local weights file of "
                         "this architecture")
    if weights in (None, "imagenet"):
        return
    path = os.path.expanduser(os.fspath(weights))
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found: {path!r}; use '' (random init), 'imagenet' (download) or the "
                         f"path of a local {name} no-top weights file")
