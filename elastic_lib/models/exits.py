"""Attach elastic exits (GAP -> Dropout -> Dense softmax) to a registry backbone.

Every added layer is named after its tap (``exit_<tap>_pool``, ``exit_<tap>_dropout``,
``exit_<tap>_softmax``; final head ``final_*``), so summaries, weights and output names are
stable. Exit metadata is derived from those names, never stored on the side.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers

from elastic_lib.control.config import EXIT_CHOICES, FINAL_HEADS, HEADS, default
from elastic_lib.control.registry import check_image_size, check_weights, get_backbone
from elastic_lib.models import keras_compat
from elastic_lib.models.backbones import build_backbone

EXIT_PREFIX = "exit_"
DEEPER_HALF_START = 8  # the original code: intermediate_outputs[8:] for every backbone
FINAL_PREFIX = "final_"
RESIZE_LAYER = "resize_in_model"  # the first layer of a model built with source_size (upsampling on the accelerator)


def resolve_taps(backbone_model: keras.Model, backbone: str, exits: str | Sequence[str]) -> list[str]:
    """Turn an exit spec into tap layer names of ``backbone_model``, shallowest first."""
    default = get_backbone(backbone).tap_rule(backbone_model)
    if isinstance(exits, str):
        if exits == "none":
            return []
        if exits == "all":
            return default
        if exits == "deeper_half":  # the original's option 1, `intermediate_outputs[8:]`: ResNet50's 9th-16th block
            if len(default) <= DEEPER_HALF_START:
                raise ValueError(
                    f"exits='deeper_half' keeps the default taps from the {DEEPER_HALF_START + 1}th on, "
                    f"as the original code does (`intermediate_outputs[8:]`); {backbone} has only "
                    f"{len(default)} taps: name the layers instead, e.g. {default[len(default) // 2 :]}"
                )
            return default[DEEPER_HALF_START:]
        raise ValueError(
            f"bad exit spec {exits!r}: use one of {EXIT_CHOICES} or a list of layer names, e.g. {default[:3]}"
        )
    names = list(exits)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"bad exit spec {exits!r}: a list of exits must be non-empty layer names; "
            f"{backbone}'s default taps are {default}"
        )
    order = {l.name: i for i, l in enumerate(backbone_model.layers)}
    unknown = [n for n in names if n not in order]
    if unknown:
        raise ValueError(
            f"exit spec names no layer of {backbone}: {unknown}; valid default taps: {default} "
            f"(any layer name of the backbone works, see model.summary())"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"exit spec repeats a layer: {names}")
    return sorted(names, key=order.__getitem__)


def _make_backbone(backbone: str, image_size: int, weights, options: dict | None = None):
    entry = get_backbone(backbone)
    check_weights(backbone, weights)
    try:
        return build_backbone(entry, (image_size, image_size, 3), weights, **(options or {}))
    except Exception as err:
        if weights not in (None, "imagenet"):  # h5 errors, shape or layer-count mismatches
            raise ValueError(
                f"weights file {weights!r} does not match the {backbone} architecture at "
                f"{image_size}x{image_size}: {type(err).__name__}: {err}"
            ) from err
        if isinstance(err, ValueError):  # Keras rejects the input shape / weights combination
            raise ValueError(
                f"cannot build {backbone} at {image_size}x{image_size} with weights={weights!r}: {err}"
            ) from err
        if weights == "imagenet":  # download failures
            raise ValueError(
                f"could not get ImageNet weights for {backbone} ({type(err).__name__}: {err}); "
                "offline, download the Keras no-top weights file elsewhere and pass "
                "weights='/path/to/file.h5'"
            ) from err
        raise


def _classifier(num_classes: int, head: str, am_scale: float):
    """name -> an output's classifier layer (float32 under mixed precision, probabilities out)."""

    def make(name: str):
        if head == "am_softmax":
            from elastic_lib.models.heads import CosineSoftmax

            return CosineSoftmax(num_classes, am_scale, name=name)
        return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)

    return make


def _resizing_first(base: keras.Model, source_size: int, image_size: int) -> keras.Model:
    """``base`` (built at image_size) fed source_size images through a first ``Resizing`` layer:
    the graph is replayed on the resized input with each layer cloned from its config (the names
    stay) and given the original's weights (ImageNet or a weights file, already loaded)."""
    inp = keras.Input((source_size, source_size, 3), name=base.layers[0].name)
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name=RESIZE_LAYER)(inp)
    clones = {}

    def clone(layer):
        clones[layer.name] = layer.__class__.from_config(layer.get_config())
        return clones[layer.name]

    # what keras.models.clone_model does, except that the resized tensor stays connected to inp
    model = keras.Model(inp, keras_compat.replay(base, x, clone), name=base.name)
    for layer in base.layers[1:]:
        clones[layer.name].set_weights(layer.get_weights())
    return model


def _check_arguments(backbone, num_classes, image_size, exits, final_head, dropout, head) -> None:
    get_backbone(backbone)
    check_image_size(backbone, image_size)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if final_head not in FINAL_HEADS:
        raise ValueError(f"unknown final_head {final_head!r}; valid: {FINAL_HEADS}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if isinstance(exits, str) and exits not in EXIT_CHOICES:
        raise ValueError(f"bad exit spec {exits!r}: use one of {EXIT_CHOICES} or a list of layer names")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {HEADS}")


def build_elastic_model(
    backbone: str,
    num_classes: int,
    image_size: int,
    *,
    exits: str | Sequence[str] = default("exits"),
    final_head: str = default("final_head"),
    weights=None,
    dropout: float = default("dropout"),
    extra_exits: Sequence[str] = (),
    head: str = default("head"),
    am_scale: float = default("am_scale"),
    backbone_options: dict | None = None,
    source_size: int | None = None,
) -> keras.Model:
    """Backbone + elastic exits. Outputs: the exits (shallowest first), then the final head.

    Reference: Zhou, Bai, Bhattacharyya, Huttunen, *Elastic Neural Networks for Classification*
    (arXiv:1810.00589). Input: ``image_size`` x ``image_size`` RGB images, at least the backbone's
    ``min_size`` (``elastic_lib.control.registry``), preprocessed with the backbone's own
    ``preprocess_input`` (``elastic_lib.models.backbones.preprocess_input``). The defaults are
    ``RunConfig``'s (``elastic_lib.control.config``); a run passes ``RunConfig.model_options()``.

    exits: "none" (baseline), "all", "deeper_half" (the default taps from the 9th on, as the
    original's option), or a list of backbone layer names.
    extra_exits: layer names tapped in addition (e.g. an exit at another network's depth).
    final_head: "flatten" (original: Flatten -> Dropout -> Dense, the baseline's too) or
    "gap" (GlobalAveragePooling2D instead of Flatten).
    weights: None, "imagenet" (Keras download) or the path of a local weights file.
    head: every output's classifier, "softmax" (Dense + softmax) or "am_softmax" (the cosine head
    ``heads.CosineSoftmax`` of scale ``am_scale``); both output probabilities, named ``*_softmax``.
    backbone_options: the registry builder's own options (e.g. inception_v4's ``bn_epsilon``).
    source_size: the model takes images of this side and upsamples them to image_size in its first
    layer (``keras.layers.Resizing`` named ``resize_in_model``, bilinear, no antialiasing: the
    host path's resize), so the host ships small images and the accelerator resizes; None (or
    image_size): the model takes image_size images.
    """
    _check_arguments(backbone, num_classes, image_size, exits, final_head, dropout, head)
    classifier = _classifier(num_classes, head, am_scale)
    base = _make_backbone(backbone, image_size, weights, backbone_options)
    if source_size is not None and source_size != image_size:
        base = _resizing_first(base, int(source_size), image_size)
    taps = resolve_taps(base, backbone, exits)
    if extra_exits:
        if exits == "none":
            raise ValueError("extra_exits need exits (a baseline has none)")
        taps = resolve_taps(base, backbone, list(dict.fromkeys([*taps, *extra_exits])))
    outputs = []
    for tap in taps:
        x = layers.GlobalAveragePooling2D(name=f"{EXIT_PREFIX}{tap}_pool")(base.get_layer(tap).output)
        x = layers.Dropout(dropout, name=f"{EXIT_PREFIX}{tap}_dropout")(x)
        outputs.append(classifier(f"{EXIT_PREFIX}{tap}_softmax")(x))
    x = base.output
    x = (layers.Flatten if final_head == "flatten" else layers.GlobalAveragePooling2D)(
        name=f"{FINAL_PREFIX}{final_head}"
    )(x)
    x = layers.Dropout(dropout, name=f"{FINAL_PREFIX}dropout")(x)  # the original keeps it without exits too
    outputs.append(classifier(f"{FINAL_PREFIX}softmax")(x))
    name = f"elastic_{backbone}" if taps else f"{backbone}_baseline"
    return keras.Model(base.input, outputs, name=name.replace(".", "_"))


def output_names(model: keras.Model) -> list[str]:
    return [keras_compat.producer(t).name for t in model.outputs]


def exit_taps(model: keras.Model) -> list[str]:
    """Tap layer of each output, shallowest first; the final head's tap is the backbone's last layer."""
    taps = []
    for name in output_names(model):
        if name.startswith(EXIT_PREFIX):
            taps.append(name[len(EXIT_PREFIX) : -len("_softmax")])
        else:
            head_in = model.get_layer(
                f"{FINAL_PREFIX}flatten" if _has(model, f"{FINAL_PREFIX}flatten") else f"{FINAL_PREFIX}gap"
            )
            taps.append(keras_compat.producer(head_in.input).name)
    return taps


def short_output_names(model: keras.Model) -> list[str]:
    """Human labels for outputs: ``exit01`` .. ``exitNN`` then ``final``."""
    n = len(model.outputs) - 1
    return [f"exit{i + 1:02d}" for i in range(n)] + ["final"]


def is_head_layer(layer) -> bool:
    return layer.name.startswith(EXIT_PREFIX) or layer.name.startswith(FINAL_PREFIX)


def _has(model, name) -> bool:
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def predict_outputs(model, dataset, labels=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Softmax probabilities of every output and the labels, in dataset order. ``labels``: the
    split's labels in that order, when the caller has them (the dataset is then read once, not a
    second time for its labels)."""
    probs = model.predict(dataset, verbose=0)
    probs = probs if isinstance(probs, (list, tuple)) else [probs]
    if labels is None:
        labels = np.concatenate([np.asarray(y[0] if isinstance(y, (list, tuple)) else y) for _, y in dataset])
    labels = np.asarray(labels)
    if len(labels) != len(probs[0]):
        raise ValueError(f"{len(labels)} labels for {len(probs[0])} predictions")
    if labels.ndim == 2:  # one-hot labels (a label-refinery run's evaluation splits)
        labels = labels.argmax(1)
    return [np.asarray(p, dtype=np.float64) for p in probs], labels
