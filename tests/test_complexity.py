"""Params and FLOPs: exact counts against the original code's reference numbers, hand
arithmetic on a tiny model, and TensorFlow's profiler as an outside check."""

import functools

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers as L

from conftest import REFERENCE_DIR
from elastic_lib.models import complexity
from elastic_lib.models.complexity import CONVENTIONS, complexity_frame, model_complexity
from elastic_lib.models.exits import build_elastic_model

REFERENCE = pd.read_csv(REFERENCE_DIR / "complexity_reference.csv")
# The reference numbers were counted by the paper's Keras 2.1.5 code; its ResNet50 is this
# project's resnet50_legacy (no padding before the first max-pool). The other two are unchanged.
REFERENCE_BACKBONE = {"mobilenet_0.75": "mobilenet_0.75", "inception_v3": "inception_v3", "resnet50": "resnet50_legacy"}


@functools.lru_cache(maxsize=None)
def baseline_224(name):
    return build_elastic_model(name, 10, 224, exits="none", final_head="flatten")


def dense_params(model, name="final_softmax"):
    return sum(int(np.prod(w.shape)) for w in model.get_layer(name).weights)


# ---------------------------------------------------------------- reference counts
def test_reference_file_has_the_expected_rows():
    assert sorted(REFERENCE["backbone"]) == sorted(REFERENCE_BACKBONE)
    assert (REFERENCE["image_size"] == 224).all() and (REFERENCE["num_classes"] == 10).all()
    assert (REFERENCE["head"] == "flatten_dense").all()


@pytest.mark.parametrize("ref_name", sorted(REFERENCE_BACKBONE))
def test_exact_reference_counts_224(ref_name):
    ref = REFERENCE.set_index("backbone").loc[ref_name]
    model = baseline_224(REFERENCE_BACKBONE[ref_name])
    got = model_complexity(model)
    assert got["kernel_macs"] == ref["flops_kernel_macs"]
    assert got["total_params"] == ref["total_params"]
    assert got["trainable_params"] == ref["trainable_params"]
    assert got["non_trainable_params"] == ref["non_trainable_params"]
    assert model.count_params() == ref["total_params"]  # the reference counted with Keras count_params()


def test_legacy_resnet50_maps_are_55_after_pool1():
    # conv1: (224 + 2*3 - 7) // 2 + 1 = 112; max-pool 3x3/2 without padding: (112 - 3) // 2 + 1 = 55
    assert tuple(baseline_224("resnet50_legacy").get_layer("pool1_pool").output.shape) == (None, 55, 55, 64)
    # today's Keras pads by 1 first: (114 - 3) // 2 + 1 = 56
    assert tuple(baseline_224("resnet50").get_layer("pool1_pool").output.shape) == (None, 56, 56, 64)


def test_resnet50_today_vs_legacy():
    today, legacy = baseline_224("resnet50"), baseline_224("resnet50_legacy")
    # heads: today's backbone ends on a 7x7x2048 map (Flatten -> 100352), legacy on 1x1x2048 (7x7 avg pool)
    assert dense_params(today) == 7 * 7 * 2048 * 10 + 10
    assert dense_params(legacy) == 2048 * 10 + 10
    c_today, c_legacy = model_complexity(today), model_complexity(legacy)
    # same backbone parameters
    assert c_today["total_params"] - dense_params(today) == c_legacy["total_params"] - dense_params(legacy)
    assert c_today["non_trainable_params"] == c_legacy["non_trainable_params"]
    # kernel MACs differ only in the conv2 stage (56x56 vs 55x55 maps; conv3's strided 1x1 gives
    # 28x28 in both) and in the final Dense. conv2 kernels (kh*kw*cin*cout):
    block1 = 1 * 1 * 64 * 256 + 1 * 1 * 64 * 64 + 3 * 3 * 64 * 64 + 1 * 1 * 64 * 256  # with the projection shortcut
    block23 = 1 * 1 * 256 * 64 + 3 * 3 * 64 * 64 + 1 * 1 * 64 * 256
    conv2_kernels = block1 + 2 * block23
    assert conv2_kernels == 212992
    expected_diff = conv2_kernels * (56 * 56 - 55 * 55) + (7 * 7 * 2048 - 2048) * 10
    assert c_today["kernel_macs"] - c_legacy["kernel_macs"] == expected_diff


# ---------------------------------------------------------------- hand-counted tiny model
@pytest.fixture(scope="module")
def tiny():
    inp = keras.Input((8, 8, 3), name="tiny_input")
    x = L.Conv2D(4, 3, padding="same", use_bias=True, name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)  # Keras default: use_bias=True
    x = L.MaxPooling2D(2, name="maxpool")(x)
    x = L.GlobalAveragePooling2D(name="final_gap")(x)  # final_* names: the project's head naming
    out = L.Dense(5, activation="softmax", name="final_softmax")(x)
    return keras.Model(inp, out)


# Conv2D(4, 3x3, same) on 8x8x3: output 8x8x4 = 256 elements; kernel 3*3*3*4 = 108; 64 positions
CONV_KMACS = 108 * 64  # 6912
CONV_FLOPS = 2 * 6912 + 256  # MACs x2 + bias add per output element = 14080
BN_FLOPS = 2 * 256  # inference BN: one mult + one add per element = 512
RELU_FLOPS = 256
DW_MACS = 3 * 3 * 256  # 9 MACs per output element = 2304 (not a kernel-MAC)
DW_FLOPS = 2 * 2304 + 256  # + its bias = 4864
POOL_FLOPS = 2 * 2 * (4 * 4 * 4)  # 2x2 window per output element, 64 outputs = 256
GAP_FLOPS = 4 * 4 * 4 + 4  # 1 per input element + 1 per channel = 68
DENSE_MACS = 4 * 5  # 20
DENSE_FLOPS = 2 * 20 + 5 + 3 * 5  # MACs x2 + bias + softmax 3 per element = 60
TINY = {
    "kernel_macs": CONV_KMACS + DENSE_MACS,  # 6932
    "macs": CONV_KMACS + DW_MACS + DENSE_MACS,  # 9236
    "flops": CONV_FLOPS + BN_FLOPS + RELU_FLOPS + DW_FLOPS + POOL_FLOPS + GAP_FLOPS + DENSE_FLOPS,  # 20096
}
# params: conv 108 + 4; BN 4 x (gamma, beta | moving mean, moving var); dw 3*3*4 + 4; dense 4*5 + 5
TINY_TRAINABLE = (108 + 4) + 2 * 4 + (36 + 4) + (20 + 5)  # 185
TINY_NON_TRAINABLE = 2 * 4  # 8


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_tiny_model_by_hand(tiny, convention):
    got = model_complexity(tiny)
    assert got[convention] == TINY[convention]
    assert got["trainable_params"] == TINY_TRAINABLE
    assert got["non_trainable_params"] == TINY_NON_TRAINABLE
    assert got["total_params"] == TINY_TRAINABLE + TINY_NON_TRAINABLE == tiny.count_params()


def test_tiny_model_layer_by_layer(tiny):
    expected = {
        "conv": CONV_FLOPS,
        "bn": BN_FLOPS,
        "relu": RELU_FLOPS,
        "dw": DW_FLOPS,
        "maxpool": POOL_FLOPS,
        "final_gap": GAP_FLOPS,
        "final_softmax": DENSE_FLOPS,
    }
    costs = complexity.layer_costs(tiny)
    for name, flops in expected.items():
        assert costs[name].flops == flops, name
    assert costs["dw"].kernel_macs == 0 and costs["dw"].macs == DW_MACS
    assert costs["conv"].kernel_macs == CONV_KMACS


def test_micronet_score_independent(tiny):
    # MicroNet: a multiply-add = 1 mult + 1 add; BN = 1 mult + 1 add; GAP = adds per input
    # element + 1 division (counted as a mult) per channel; bias, ReLU, pooling compares,
    # softmax ops are adds.
    macs = TINY["macs"]
    mults = macs + 256 + 4  # BN scale, GAP division
    adds = (
        macs + 256 + 256 + 256 + 256 + 256 + 64 + 5 + 15
    )  # conv bias, BN shift, ReLU, dw bias, pool, GAP, dense bias, softmax
    assert mults + adds == TINY["flops"]
    params = TINY_TRAINABLE + TINY_NON_TRAINABLE
    expected = params * 16 / 32 / 36.5e6 + (0.5 * mults + adds) / 10.49e9
    frame = complexity_frame(tiny)
    assert len(frame) == 1
    assert frame.loc[0, "micronet_score"] == pytest.approx(expected, rel=1e-12)
    total = sum(complexity.layer_costs(tiny).values(), complexity.Cost())
    assert complexity.micronet_score(params, total) == pytest.approx(expected, rel=1e-12)


def test_tiny_table(tiny):
    table = complexity_frame(tiny)
    assert list(table["output"]) == ["final"]
    assert table.loc[0, "tap_layer"] == "maxpool"
    for conv in CONVENTIONS:
        assert table.loc[0, f"{conv}_to_output"] == TINY[conv]
        assert table.loc[0, f"{conv}_fraction_of_final"] == 1.0


def test_unknown_convention():
    with pytest.raises(ValueError, match="kernel_macs"):
        complexity.Cost().get("gflops")


# ---------------------------------------------------------------- TensorFlow profiler
@pytest.mark.requires_tensorflow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_0.75"])
def test_flops_within_1pct_of_tf_profiler(name):
    model = build_elastic_model(name, 10, 64, exits="none")
    ours = model_complexity(model)["flops"]
    tf_count = complexity.profiler_flops(model)
    assert tf_count > 0
    assert abs(ours - tf_count) / tf_count < 0.01


# ---------------------------------------------------------------- per-output table (MobileNet)
def test_complexity_frame_rows(mobilenet_elastic):
    n_out = len(mobilenet_elastic.outputs)
    assert n_out == 14
    t = complexity_frame(mobilenet_elastic)
    for conv in CONVENTIONS:
        assert list(t["output"]) == [f"exit{i:02d}" for i in range(1, 14)] + ["final"]
        assert list(t["tap_layer"]) == [f"conv_pw_{i}_relu" for i in range(1, 14)] + ["conv_pw_13_relu"]
        assert list(t["depth_index"]) == list(range(1, 15))
        assert t[f"{conv}_fraction_of_final"].iloc[-1] == 1.0
        np.testing.assert_allclose(
            t[f"{conv}_fraction_of_final"], t[f"{conv}_to_output"] / t[f"{conv}_to_output"].iloc[-1]
        )
        exits = t[f"{conv}_to_output"].to_numpy()[:-1]
        assert np.all(np.diff(exits) >= 0), conv
        assert np.all(np.diff(t["params_to_output"].to_numpy()[:-1]) > 0)


def test_first_exit_by_hand(mobilenet_elastic):
    """exit01 = conv1 (3x3/2, 24 ch) -> conv_dw_1 -> conv_pw_1 (48 ch) on 16x16 maps, + head."""
    assert tuple(mobilenet_elastic.get_layer("conv_pw_1_relu").output.shape) == (None, 16, 16, 48)
    hw = 16 * 16
    conv1, dw1, pw1 = 3 * 3 * 3 * 24 * hw, 3 * 3 * 24 * hw, 1 * 1 * 24 * 48 * hw  # MACs, no biases
    dense = 48 * 10
    elementwise = (2 + 1) * 24 * hw + (2 + 1) * 24 * hw + (2 + 1) * 48 * hw  # BN (2) + ReLU (1) after each conv
    gap = 48 * hw + 48
    head_rest = 10 + 3 * 10  # dense bias + softmax
    t = complexity_frame(mobilenet_elastic).iloc[0]
    assert t["kernel_macs_to_output"] == conv1 + pw1 + dense == 461280
    assert t["macs_to_output"] == conv1 + dw1 + pw1 + dense
    assert t["flops_to_output"] == 2 * (conv1 + dw1 + pw1 + dense) + elementwise + gap + head_rest
    # params: conv1 3*3*3*24, dw 3*3*24, pw 24*48, BN 4 per channel, dense 48*10 + 10
    params = 3 * 3 * 3 * 24 + 3 * 3 * 24 + 24 * 48 + 4 * (24 + 24 + 48) + 48 * 10 + 10
    assert t["params_to_output"] == params


def test_exit_head_cost_by_hand(mobilenet_elastic):
    """exit07's own head (GAP -> Dropout -> Dense softmax) on conv_pw_7_relu (2x2x384 at 32x32)."""
    tap = mobilenet_elastic.get_layer("conv_pw_7_relu")
    assert tuple(tap.output.shape) == (None, 2, 2, 384)
    gap = 2 * 2 * 384 + 384
    dense = 2 * (384 * 10) + 10 + 3 * 10
    prefix = keras.Model(mobilenet_elastic.inputs[0], tap.output)
    row = complexity_frame(mobilenet_elastic).set_index("tap_layer").loc["conv_pw_7_relu"]
    assert row["flops_to_output"] - model_complexity(prefix)["flops"] == gap + dense
    # the last exit and the final head share the whole backbone: they differ by the exit's GAP
    # on the 1x1x768 map (the final head's Flatten and Dropout are free)
    t = complexity_frame(mobilenet_elastic)
    assert t["flops_to_output"].iloc[-2] - t["flops_to_output"].iloc[-1] == 768 + 768


def test_complexity_frame_cumulative(mobilenet_elastic):
    f = complexity_frame(mobilenet_elastic)
    assert len(f) == 14
    assert f["flops_cumulative"].iloc[0] == f["flops_to_output"].iloc[0]
    # staged inference up to the final head has evaluated every head: whole-model cost
    assert f["flops_cumulative"].iloc[-1] == model_complexity(mobilenet_elastic)["flops"]
    assert np.all(np.diff(f["flops_cumulative"]) > 0)
