"""The backbone registry: one table, thin lookups by name (timm-style).

Every entry knows its Keras constructor, the rule that picks its default exit
taps (layer names, shallowest first), its minimum input size and its own
``preprocess_input``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Backbone:
    """One registry entry: names and numbers only, no Keras (the control plane reads the registry;
    ``elastic_lib.models.backbones`` builds the model and finds the preprocessing)."""

    name: str
    app: str  # a keras.applications class name, or "module:function" of a builder (input_shape, weights) -> model
    tap_rule: Callable  # model -> default exit layer names, shallowest first
    min_size: int
    family: str  # keras.applications.<family>.preprocess_input
    paper: bool = False  # in the paper's Table I
    kwargs: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()  # the builder's own options that a run may set (RunConfig fields)
    imagenet: bool = True  # Keras has ImageNet weights for it
    default_size: int = 224  # its ImageNet input side (the model table in docs/models.md is at this size)


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


# The original code taps each residual ``add`` (Keras 2.1.5's ``add_N``), before the block's ReLU.
_RESNET_TAPS = _names_matching(r"conv\d_block\d+_add")
_EFFICIENTNET_TAPS = _block_outputs(r"(block\d[a-z]_)project_bn")
# Inception-v4: the stem and every Inception and Reduction block (the last feeds the final head)
_INCEPTION_V4_TAPS = _names_matching(r"stem|inception_[abc]\d|reduction_[ab]")
_BUILDERS = "elastic_lib.models.builders"

REGISTRY: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            "mobilenet_0.75", "MobileNet", _names_matching(r"conv_pw_\d+_relu"), 32, "mobilenet", True, {"alpha": 0.75}
        ),
        Backbone(
            "mobilenet_v2",
            "MobileNetV2",
            _block_outputs(r"((?:expanded_conv|block_\d+)_)project_BN"),
            32,
            "mobilenet_v2",
        ),
        Backbone(
            "inception_v3", "InceptionV3", _names_matching(r"mixed(\d|10)"), 75, "inception_v3", True, default_size=299
        ),
        Backbone("resnet50", "ResNet50", _RESNET_TAPS, 32, "resnet50", True),
        Backbone("resnet50_legacy", f"{_BUILDERS}.resnet50_legacy:resnet50_legacy", _RESNET_TAPS, 197, "resnet50"),
        Backbone("resnet101", "ResNet101", _RESNET_TAPS, 32, "resnet"),
        Backbone("resnet152", "ResNet152", _RESNET_TAPS, 32, "resnet"),
        Backbone("densenet121", "DenseNet121", _densenet_taps, 32, "densenet", True),
        Backbone("densenet169", "DenseNet169", _densenet_taps, 32, "densenet", True),
        Backbone("densenet201", "DenseNet201", _densenet_taps, 32, "densenet"),
        Backbone("vgg16", "VGG16", _names_matching(r"block\d_pool"), 32, "vgg16", True),
        Backbone("efficientnet_b0", "EfficientNetB0", _EFFICIENTNET_TAPS, 32, "efficientnet"),
        # the studies' backbones (issues 12 and 13): built here, no Keras ImageNet weights
        Backbone(
            "inception_v4",
            f"{_BUILDERS}.inception_v4:InceptionV4",
            _INCEPTION_V4_TAPS,
            75,
            "inception_v3",
            options=("bn_epsilon", "count_include_pad"),
            imagenet=False,
            default_size=299,
        ),
        Backbone(
            "efficientnet_b0_cifar",
            f"{_BUILDERS}.efficientnet_cifar:EfficientNetB0Cifar",
            _EFFICIENTNET_TAPS,
            32,
            "efficientnet",
            imagenet=False,
            default_size=32,  # a CIFAR network
        ),
        # a toy for tests and demos: trains in seconds
        Backbone(
            "tiny_cnn",
            f"{_BUILDERS}.tiny_cnn:tiny_cnn",
            _names_matching(r"block\d_out"),
            8,
            "mobilenet",
            imagenet=False,
            default_size=32,
        ),
    ]
}


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
        raise ValueError(
            f"image_size={image_size} is below {name}'s minimum input size {b.min_size}; "
            f"use image_size >= {b.min_size} (the paper used 224)"
        )


def weights_file(weights_dir: str, name: str) -> str:
    """Where ``python -m elastic_lib.models.weights download`` keeps ``name``'s ImageNet no-top weights."""
    return os.path.join(weights_dir, f"{name}_imagenet_notop.weights.h5")


def check_weights(name: str, weights) -> None:
    """None (random init), "imagenet" (Keras download) or an existing local weights file."""
    if weights == "imagenet" and not get_backbone(name).imagenet:
        raise ValueError(
            f"{name} has no Keras ImageNet weights: use random init ('') or a local weights file of this architecture"
        )
    if weights in (None, "imagenet"):
        return
    path = os.path.expanduser(os.fspath(weights))
    if not os.path.isfile(path):
        raise ValueError(
            f"weights file not found: {path!r}; use '' (random init), 'imagenet' (download) or the "
            f"path of a local {name} no-top weights file"
        )
