"""Params and FLOPs of every output, by walking the Keras graph (no profiler needed).

Conventions (each table names the one it uses):
- ``kernel_macs``: the original code's count. For every Conv2D and Dense layer (the layers
  with a ``kernel`` weight in Keras 2; DepthwiseConv2D had a ``depthwise_kernel`` and is not
  counted), prod(kernel shape) x prod(output spatial dims); one multiply-add = 1. Biases,
  BatchNorm, activations, pooling, Add/Concatenate are not counted.
- ``macs``: every multiply-add of Conv2D (grouped included), DepthwiseConv2D and Dense.
- ``flops``: 2 x macs plus element-wise work: bias add 1, BatchNorm (inference) 2, ReLU 1,
  sigmoid 3, swish 4, softmax 3 per element; max/avg pooling kh*kw per output element;
  global average pooling 1 per input element + 1 per channel; Add/Multiply 1 per element per
  extra input; Rescaling 1-2, Normalization 2 per element. Concatenate, padding, reshape,
  flatten and dropout (identity at inference) are free; so is the ``resize_in_model`` layer
  (input upsampling, which the default path does on the host and no convention counts).
MicroNet score (NeurIPS 2019 MicroNet challenge, relative to WideResNet-28-10):
  score = (params x 16/32) / 36.5e6 + (0.5 x mults + adds) / 10.49e9, where a multiply-add is
  one multiplication and one addition, and other element-wise ops (compare, exp) count as adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from keras import layers as L

from elastic_lib.models import keras_compat
from elastic_lib.models.exits import exit_taps, output_names, short_output_names

CONVENTIONS = ("kernel_macs", "macs", "flops")
MICRONET_PARAMS = 36.5e6
MICRONET_OPS = 10.49e9
_ACT_COST = {
    "linear": 0,
    None: 0,
    "relu": 1,
    "relu6": 1,
    "sigmoid": 3,
    "hard_sigmoid": 2,
    "swish": 4,
    "silu": 4,
    "softmax": 3,
    "tanh": 3,
    "elu": 3,
    "gelu": 8,
}
_FREE = (L.InputLayer, L.Resizing, L.ZeroPadding2D, L.Concatenate, L.Flatten, L.Reshape, L.Dropout, L.Cropping2D)
_WEIGHTED = (L.Conv2D, L.DepthwiseConv2D, L.Dense)


@dataclass
class Cost:
    kernel_macs: int = 0
    macs: int = 0
    mults: int = 0  # element-wise multiplications beyond the MACs
    adds: int = 0  # element-wise additions (and other ops) beyond the MACs

    @property
    def flops(self) -> int:
        return 2 * self.macs + self.mults + self.adds

    def get(self, convention: str) -> int:
        check_convention(convention)
        return getattr(self, convention)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(
            self.kernel_macs + other.kernel_macs,
            self.macs + other.macs,
            self.mults + other.mults,
            self.adds + other.adds,
        )


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOPs convention {convention!r}; valid: {CONVENTIONS}")


def _node(layer):
    """The layer's first call: its place in the model it was built in. (Later calls come from
    sub-models cut out of that graph, e.g. the staged early-exit segments.)"""
    return keras_compat.first_call(layer)


def _numel(shape) -> int:
    return int(np.prod([d for d in shape[1:]], dtype=np.int64))


def _activation_name(fn) -> str | None:
    return getattr(fn, "__name__", None) if fn is not None else None


def _bias_and_activation(layer, n_out: int) -> int:
    """Adds of a weighted layer's own bias and fused activation."""
    return (n_out if layer.use_bias else 0) + _ACT_COST[_activation_name(layer.activation)] * n_out


def _weighted_cost(layer, out, n_out: int) -> Cost:
    """Conv2D / DepthwiseConv2D / Dense: MACs (``kernel_macs`` only for Conv2D and Dense, as the
    original code), plus bias and fused activation."""
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        c = Cost(macs=kh * kw * n_out)
    else:  # Conv2D: kernel (kh, kw, cin/groups, cout); Dense: (cin, cout), maybe per position
        spatial = int(np.prod(out[1:-1])) if len(out) > 2 else 1
        macs = int(np.prod(layer.kernel.shape)) * spatial
        c = Cost(kernel_macs=macs, macs=macs)
    c.adds += _bias_and_activation(layer, n_out)
    return c


def layer_cost(layer) -> Cost:
    """Cost of one inference pass of ``layer`` for a batch of one."""
    node = _node(layer)
    ins = [t.shape for t in node.input_tensors]
    out = node.output_tensors[0].shape
    n_out = _numel(out)
    if isinstance(layer, _FREE):
        return Cost()
    if hasattr(layer, "elastic_cost"):  # the workbook's own layers count themselves (heads.CosineSoftmax)
        return Cost(**layer.elastic_cost(ins[0], out))
    if isinstance(layer, _WEIGHTED):
        return _weighted_cost(layer, out, n_out)
    if isinstance(layer, L.BatchNormalization):
        return Cost(mults=n_out, adds=n_out)
    if isinstance(layer, L.Activation):
        return Cost(adds=_ACT_COST[_activation_name(layer.activation)] * n_out)
    if isinstance(layer, L.ReLU):
        return Cost(adds=n_out)
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        kh, kw = layer.pool_size
        return Cost(adds=kh * kw * n_out)
    if isinstance(layer, L.GlobalAveragePooling2D):
        return Cost(adds=_numel(ins[0]), mults=n_out)
    if isinstance(layer, L.Add):
        return Cost(adds=(len(ins) - 1) * n_out)
    if isinstance(layer, L.Multiply):
        return Cost(mults=(len(ins) - 1) * n_out)
    if isinstance(layer, L.Rescaling):
        return Cost(mults=n_out, adds=n_out if np.any(np.asarray(layer.offset) != 0) else 0)
    if isinstance(layer, L.Normalization):
        return Cost(mults=n_out, adds=n_out)
    raise NotImplementedError(
        f"no cost rule for layer {layer.name!r} of type {type(layer).__name__}; "
        "add one to elastic_lib.models.complexity.layer_cost"
    )


def _parents(layer) -> list:
    return [keras_compat.producer(t) for t in _node(layer).input_tensors]


def ancestors(tensor) -> set[str]:
    """Names of every layer needed to compute ``tensor`` (itself included)."""
    seen: set[str] = set()
    stack = [keras_compat.producer(tensor)]
    while stack:
        layer = stack.pop()
        if layer.name in seen:
            continue
        seen.add(layer.name)
        stack.extend(_parents(layer))
    return seen


def _weighted_depth(model: keras.Model) -> dict[str, int]:
    """Longest path, in Conv2D/DepthwiseConv2D/Dense layers, from the input to each layer."""
    depth: dict[str, int] = {}
    for layer in model.layers:  # functional models list layers in topological order
        parents = _parents(layer) if keras_compat.calls(layer) and _node(layer).input_tensors else []
        d = max((depth[p.name] for p in parents), default=0)
        depth[layer.name] = d + (1 if isinstance(layer, _WEIGHTED) else 0)
    return depth


def layer_costs(model: keras.Model) -> dict[str, Cost]:
    return {layer.name: layer_cost(layer) for layer in model.layers}


def _params(model: keras.Model, names) -> tuple[int, int]:
    trainable = non_trainable = 0
    for name in names:
        layer = model.get_layer(name)
        trainable += sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        non_trainable += sum(int(np.prod(w.shape)) for w in layer.non_trainable_weights)
    return trainable, non_trainable


def model_complexity(model: keras.Model) -> dict:
    """Whole model (every output computed): its cost in each convention (``kernel_macs``,
    ``macs``, ``flops`` keys) and its parameter counts."""
    total = sum(layer_costs(model).values(), Cost())
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {
        **{conv: total.get(conv) for conv in CONVENTIONS},
        "total_params": trainable + non_trainable,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
    }


def micronet_score(params: int, cost: Cost) -> float:
    mults = cost.macs + cost.mults
    adds = cost.macs + cost.adds
    return params * 16 / 32 / MICRONET_PARAMS + (0.5 * mults + adds) / MICRONET_OPS


def _output_rows(model: keras.Model):
    costs = layer_costs(model)
    depth = _weighted_depth(model)
    sets = [ancestors(t) for t in model.outputs]
    seen: set[str] = set()
    for i, (out, tap, short, names) in enumerate(
        zip(output_names(model), exit_taps(model), short_output_names(model), sets)
    ):
        seen |= names
        own = sum((costs[n] for n in names), Cost())
        cum = sum((costs[n] for n in seen), Cost())
        tr, ntr = _params(model, names)
        yield dict(
            output=short,
            output_layer=out,
            tap_layer=tap,
            depth_index=i + 1,
            depth_layers=depth[out],
            own=own,
            cumulative=cum,
            params=tr + ntr,
            trainable=tr,
        )


def complexity_frame(model: keras.Model) -> pd.DataFrame:
    """Every convention side by side (the run directory's ``complexity.csv``).

    ``*_to_output``: that output alone (backbone prefix + its own head).
    ``*_cumulative``: stopping at that output in staged inference (prefix + every head up to it).
    """
    rows = []
    out_rows = list(_output_rows(model))
    final = out_rows[-1]["own"]
    for r in out_rows:
        row = {k: r[k] for k in ("output", "output_layer", "tap_layer", "depth_index", "depth_layers")}
        row["params_to_output"] = r["params"]
        row["trainable_params_to_output"] = r["trainable"]
        for conv in CONVENTIONS:
            row[f"{conv}_to_output"] = r["own"].get(conv)
            row[f"{conv}_cumulative"] = r["cumulative"].get(conv)
            row[f"{conv}_fraction_of_final"] = r["own"].get(conv) / final.get(conv)
        row["micronet_score"] = micronet_score(r["params"], r["own"])
        rows.append(row)
    return pd.DataFrame(rows)


def profiler_flops(model: keras.Model) -> int:
    """TensorFlow's own count (tf.compat.v1.profiler float_operation) for one batch-1 inference
    (the independent check of ``complexity_frame``'s counts, which need no backend)."""
    from elastic_lib.control.backend import require_tensorflow

    require_tensorflow("the tf.profiler FLOPs count")
    import tensorflow as tf

    spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)


def humanize(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"
