"""Registry backbones as Keras models: the constructor and the preprocessing of each entry of
``elastic_lib.control.registry`` (which holds names and numbers only)."""

from __future__ import annotations

import importlib
from typing import Callable

import keras

from elastic_lib.control.registry import Backbone, get_backbone


def build_backbone(entry: str | Backbone, input_shape, weights, **options) -> keras.Model:
    """The no-top backbone (``include_top=False``) of a registry entry (or its name).

    input_shape: ``(size, size, 3)``, at least the entry's ``min_size``.
    weights: None (random init), "imagenet" (Keras download) or the path of a weights file.
    options: some of the entry's ``options`` (its builder's own, e.g. inception_v4's ``bn_epsilon``)."""
    entry = get_backbone(entry) if isinstance(entry, str) else entry
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(f"{entry.name} has no option(s) {unknown}; its options: {list(entry.options) or 'none'}")
    if ":" in entry.app:
        module, _, fn = entry.app.partition(":")
        return getattr(importlib.import_module(module), fn)(input_shape=input_shape, weights=weights, **options)
    return getattr(keras.applications, entry.app)(
        include_top=False, weights=weights, input_shape=input_shape, **entry.kwargs
    )


def preprocess_input(entry: str | Backbone) -> Callable:
    """The entry's ``keras.applications.<family>.preprocess_input`` (what its ImageNet weights expect)."""
    entry = get_backbone(entry) if isinstance(entry, str) else entry
    return importlib.import_module(f"keras.applications.{entry.family}").preprocess_input
