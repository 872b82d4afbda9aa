"""Every registry backbone builds with and without exits, and its default taps match the
published architectures (counts and names written out from the papers / Keras docs)."""

import gc
from collections import Counter

import numpy as np
import pytest

import elastic_lib
from elastic_lib.control.registry import get_backbone
from elastic_lib.models.backbones import build_backbone
from elastic_lib.models.exits import build_elastic_model, exit_taps, output_names

NUM_CLASSES = 7
BACKBONES = elastic_lib.list_backbones()


def _resnet_taps(blocks):
    # the original code taps every residual add (before the block's ReLU)
    return [f"conv{stage}_block{b}_add" for stage, n in zip((2, 3, 4, 5), blocks) for b in range(1, n + 1)]


def _densenet_taps(blocks):
    # the last concat of each dense block, and each transition's pooling (3 transitions)
    taps = []
    for i, n in enumerate(blocks):
        taps.append(f"conv{i + 2}_block{n}_concat")
        if i < 3:
            taps.append(f"pool{i + 2}_pool")
    return taps


# MobileNetV2 (Sandler et al. 2018, Table 2): 17 bottleneck blocks; a block has a residual
# add when stride 1 and in == out channels: blocks 2, 4, 5, 7, 8, 9, 11, 12, 14, 15.
_MBV2_ADD = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}
_MOBILENET_V2_TAPS = ["expanded_conv_project_BN"] + [
    f"block_{i}_add" if i in _MBV2_ADD else f"block_{i}_project_BN" for i in range(1, 17)
]
# EfficientNet-B0 (Tan & Le 2019, Table 1): stages of 1, 2, 2, 3, 3, 4, 1 MBConv blocks; every
# block but the first of a stage has a residual add.
_EFFNET_TAPS = [
    f"block{s}{chr(ord('a') + j)}_" + ("project_bn" if j == 0 else "add")
    for s, n in enumerate((1, 2, 2, 3, 3, 4, 1), start=1)
    for j in range(n)
]

EXPECTED_TAPS = {
    "mobilenet_0.75": [f"conv_pw_{i}_relu" for i in range(1, 14)],
    "mobilenet_v2": _MOBILENET_V2_TAPS,
    "inception_v3": [f"mixed{i}" for i in range(11)],
    "resnet50": _resnet_taps((3, 4, 6, 3)),
    "resnet50_legacy": _resnet_taps((3, 4, 6, 3)),
    "resnet101": _resnet_taps((3, 4, 23, 3)),
    "resnet152": _resnet_taps((3, 8, 36, 3)),
    "densenet121": _densenet_taps((6, 12, 24, 16)),
    "densenet169": _densenet_taps((6, 12, 32, 32)),
    "densenet201": _densenet_taps((6, 12, 48, 32)),
    "vgg16": [f"block{i}_pool" for i in range(1, 6)],
    "efficientnet_b0": _EFFNET_TAPS,
    # Inception-v4 (Szegedy et al. 2016, Fig. 9): stem, 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C
    "inception_v4": [
        "stem",
        *[f"inception_a{i}" for i in range(1, 5)],
        "reduction_a",
        *[f"inception_b{i}" for i in range(1, 8)],
        "reduction_b",
        *[f"inception_c{i}" for i in range(1, 4)],
    ],
    "efficientnet_b0_cifar": _EFFNET_TAPS,  # B0's blocks, two strides changed
    "tiny_cnn": ["block1_out", "block2_out", "block3_out"],  # the toy's three blocks (its docstring)
}
# The counts from the brief / paper, kept separate from the name lists above as a cross-check.
EXPECTED_COUNTS = {
    "resnet50": 16,
    "resnet50_legacy": 16,
    "resnet101": 33,
    "resnet152": 50,
    "inception_v3": 11,
    "mobilenet_0.75": 13,
    "vgg16": 5,
    "densenet121": 7,
    "densenet169": 7,
    "densenet201": 7,
    "mobilenet_v2": 17,
    "efficientnet_b0": 16,
    "inception_v4": 17,
    "efficientnet_b0_cifar": 16,
    "tiny_cnn": 3,
}


class Built:
    def __init__(self, name):
        self.name = name
        self.size = get_backbone(name).min_size
        self.all = build_elastic_model(name, NUM_CLASSES, self.size, exits="all")
        self.none = build_elastic_model(name, NUM_CLASSES, self.size, exits="none")
        x = np.zeros((1, self.size, self.size, 3), np.float32)
        self.out_all = [np.asarray(o) for o in _as_list(self.all(x, training=False))]
        self.out_none = [np.asarray(o) for o in _as_list(self.none(x, training=False))]
        # the registry rule applied to a model without exit layers
        self.default_taps = get_backbone(name).tap_rule(self.none)


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.fixture(scope="module", params=BACKBONES)
def built(request):
    """One backbone at a time (pytest groups the tests by this module-scoped param)."""
    b = Built(request.param)
    yield b
    del b
    gc.collect()


def test_registry_is_covered_by_facts():
    assert set(BACKBONES) == set(EXPECTED_TAPS), "add the architecture facts of a new backbone to this file"


def test_number_and_shape_of_outputs(built):
    assert len(built.default_taps) >= 1
    assert len(built.all.outputs) == len(built.default_taps) + 1
    assert len(built.out_all) == len(built.default_taps) + 1
    assert len(built.none.outputs) == 1 and len(built.out_none) == 1
    for p in built.out_all + built.out_none:
        assert p.shape == (1, NUM_CLASSES)
        assert np.all(np.isfinite(p)) and np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_default_taps_match_architecture(built):
    expected = EXPECTED_TAPS[built.name]
    assert built.default_taps == expected
    assert len(built.default_taps) == EXPECTED_COUNTS[built.name]
    assert exit_taps(built.all)[:-1] == expected


def test_added_layers_are_named_after_their_tap(built):
    taps = built.default_taps
    names_all = {l.name for l in built.all.layers if type(l).__name__ != "InputLayer"}
    names_none = {l.name for l in built.none.layers if type(l).__name__ != "InputLayer"}
    exit_layers = {f"exit_{t}_{part}" for t in taps for part in ("pool", "dropout", "softmax")}
    final_all = {"final_flatten", "final_dropout", "final_softmax"}
    final_none = {"final_flatten", "final_dropout", "final_softmax"}  # the original's baseline keeps its Dropout
    assert exit_layers | final_all <= names_all
    assert final_none <= names_none

    # nothing else was added: the remaining layers of both models are the same backbone
    # (compared by type and output shape: some Keras backbones auto-name layers, e.g. conv2d_59)
    def backbone_signature(model, added):
        return Counter(
            (type(l).__name__, tuple(l.output.shape))
            for l in model.layers
            if type(l).__name__ != "InputLayer" and l.name not in added
        )

    assert backbone_signature(built.all, exit_layers | final_all) == backbone_signature(built.none, final_none)
    assert not any(n.startswith(("exit_", "final_")) for n in names_none - final_none)
    assert not any(n.startswith(("exit_", "final_")) for n in names_all - exit_layers - final_all)
    assert output_names(built.all) == [f"exit_{t}_softmax" for t in taps] + ["final_softmax"]
    assert output_names(built.none) == ["final_softmax"]
    for t in taps:  # tap -> GAP -> Dropout -> Dense(softmax)
        pool = built.all.get_layer(f"exit_{t}_pool")
        drop = built.all.get_layer(f"exit_{t}_dropout")
        dense = built.all.get_layer(f"exit_{t}_softmax")
        assert type(pool).__name__ == "GlobalAveragePooling2D"
        assert type(drop).__name__ == "Dropout" and drop.rate == pytest.approx(0.2)
        assert type(dense).__name__ == "Dense" and dense.units == NUM_CLASSES
        assert dense.activation.__name__ == "softmax"
        assert pool.input is built.all.get_layer(t).output
        assert drop.input is pool.output and dense.input is drop.output


def test_deeper_half_resnet50_is_the_originals_taps_8_on():
    # original ElasticNN.py: start_layer_index = 8; intermediate_outputs[8:] -> the 9th..16th block, 8 exits
    model = build_elastic_model("resnet50", NUM_CLASSES, 32, exits="deeper_half")
    taps = exit_taps(model)[:-1]
    assert len(taps) == 8
    assert taps == EXPECTED_TAPS["resnet50"][8:16]
    # 3 conv2 + 4 conv3 blocks, then conv4_block1 is the 8th: the 9th tap is conv4_block2
    assert taps[0] == "conv4_block2_add" and taps[-1] == "conv5_block3_add"


def test_deeper_half_refuses_a_backbone_with_too_few_taps():
    with pytest.raises(ValueError, match="vgg16 has only 5 taps"):
        build_elastic_model("vgg16", NUM_CLASSES, 32, exits="deeper_half")


def test_extra_exits_add_a_tap_in_depth_order():
    model = build_elastic_model("vgg16", NUM_CLASSES, 32, exits="all", extra_exits=["block3_conv2"])
    taps = exit_taps(model)[:-1]
    assert taps == ["block1_pool", "block2_pool", "block3_conv2", "block3_pool", "block4_pool", "block5_pool"]


def test_baseline_final_head_keeps_the_originals_dropout():
    model = build_elastic_model("vgg16", NUM_CLASSES, 32, exits="none", dropout=0.2)
    drop = model.get_layer("final_dropout")
    assert drop.rate == 0.2 and model.get_layer("final_softmax").input is drop.output


def test_custom_exit_list_is_sorted_shallowest_first():
    model = build_elastic_model("vgg16", NUM_CLASSES, 32, exits=["block4_pool", "block2_pool"])
    assert exit_taps(model)[:-1] == ["block2_pool", "block4_pool"]


def test_resnet50_legacy_min_size_is_tight():
    # 196 -> conv1 (pad 3, 7x7/2) 98 -> maxpool 3/2 (no pad) 48 -> 24 -> 12 -> 6 < 7 (7x7 avg pool)
    # 197 -> 99 -> 49 -> 25 -> 13 -> 7: the smallest input the legacy backbone accepts.
    assert get_backbone("resnet50_legacy").min_size == 197
    with pytest.raises(ValueError):
        build_backbone("resnet50_legacy", (196, 196, 3), None)


def test_tiny_cnn_parameter_count_by_hand():
    """The toy's parameters from its definition: per block a 3x3 convolution (9 * c_in * c_out
    weights + c_out biases) and a BatchNorm (4 * c_out); the elastic head of each block 10-way
    Dense (c_out * 10 + 10), the final Flatten -> Dense at 16x16 input (2 x 2 x 32 features)."""
    convs = [(3, 8), (8, 16), (16, 32)]
    backbone = sum(9 * a * b + b + 4 * b for a, b in convs)
    exits = sum(b * 10 + 10 for _, b in convs)
    final = 2 * 2 * 32 * 10 + 10
    assert build_elastic_model("tiny_cnn", 10, 16, exits="all").count_params() == backbone + exits + final
    assert build_elastic_model("tiny_cnn", 10, 16, exits="none").count_params() == backbone + final
