"""The backbone registry: one table, thin lookups by name (timm-style).

Every entry knows its Keras constructor, the rule that picks its default exit
taps (layer names, shallowest first), its minimum input size and its own
``preprocess_input``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers
from keras.applications import (densenet, efficientnet, inception_v3, mobilenet, mobilenet_v2,
                                resnet, resnet50, vgg16)


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: Callable[..., keras.Model]  # (input_shape, weights) -> include_top=False model
    tap_rule: Callable[[keras.Model], list[str]]  # model -> default exit layer names
    min_size: int
    preprocess: Callable  # keras.applications.<family>.preprocess_input
    family: str
    paper: bool = False  # in the paper's Table I


# ---------------------------------------------------------------- exit-tap rules
def _names_matching(pattern: str) -> Callable[[keras.Model], list[str]]:
    rx = re.compile(pattern)
    return lambda model: [l.name for l in model.layers if rx.fullmatch(l.name)]


def _block_outputs(prefix_rx: str, add_suffix: str = "add"):
    """MobileNetV2 / EfficientNet: each block's output is its residual add if it has one,
    else its projection BatchNorm."""
    rx = re.compile(prefix_rx)

    def rule(model: keras.Model) -> list[str]:
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


def _densenet_taps(model: keras.Model) -> list[str]:
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
def _app(fn, **kw):
    def make(input_shape, weights):
        return fn(include_top=False, weights=weights, input_shape=input_shape, **kw)
    return make


def resnet50_legacy(input_shape=(224, 224, 3), weights=None) -> keras.Model:
    """ResNet50 as in Keras 2.1.5 (the paper's code): no zero-padding before the first
    3x3/2 max-pool (55x55 maps after it at 224 input) and a 7x7 average pool at the end of
    the backbone. Same parameter count as today's ResNet50; layer names follow today's Keras
    so that today's ImageNet weights load by name."""
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


_RESNET_TAPS = _names_matching(r"conv\d_block\d+_out")

REGISTRY: dict[str, Backbone] = {b.name: b for b in [
    Backbone("mobilenet_0.75", _app(keras.applications.MobileNet, alpha=0.75),
             _names_matching(r"conv_pw_\d+_relu"), 32, mobilenet.preprocess_input, "mobilenet", True),
    Backbone("mobilenet_v2", _app(keras.applications.MobileNetV2),
             _block_outputs(r"((?:expanded_conv|block_\d+)_)project_BN"), 32,
             mobilenet_v2.preprocess_input, "mobilenet_v2"),
    Backbone("inception_v3", _app(keras.applications.InceptionV3),
             _names_matching(r"mixed(\d|10)"), 75, inception_v3.preprocess_input, "inception_v3", True),
    Backbone("resnet50", _app(keras.applications.ResNet50), _RESNET_TAPS, 32,
             resnet50.preprocess_input, "resnet", True),
    Backbone("resnet50_legacy", resnet50_legacy, _RESNET_TAPS, 197,
             resnet50.preprocess_input, "resnet"),
    Backbone("resnet101", _app(keras.applications.ResNet101), _RESNET_TAPS, 32,
             resnet.preprocess_input, "resnet"),
    Backbone("resnet152", _app(keras.applications.ResNet152), _RESNET_TAPS, 32,
             resnet.preprocess_input, "resnet"),
    Backbone("densenet121", _app(keras.applications.DenseNet121), _densenet_taps, 32,
             densenet.preprocess_input, "densenet", True),
    Backbone("densenet169", _app(keras.applications.DenseNet169), _densenet_taps, 32,
             densenet.preprocess_input, "densenet", True),
    Backbone("densenet201", _app(keras.applications.DenseNet201), _densenet_taps, 32,
             densenet.preprocess_input, "densenet"),
    Backbone("vgg16", _app(keras.applications.VGG16), _names_matching(r"block\d_pool"), 32,
             vgg16.preprocess_input, "vgg", True),
    Backbone("efficientnet_b0", _app(keras.applications.EfficientNetB0),
             _block_outputs(r"(block\d[a-z]_)project_bn"), 32,
             efficientnet.preprocess_input, "efficientnet"),
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
