"""EfficientNet-B0 for 32x32 inputs (elastic_lib.models.builders.efficientnet_cifar)."""

import keras
import pytest

from elastic_lib.control import registry as backbones
from elastic_lib.models import complexity
from elastic_lib.models.builders.efficientnet_cifar import EfficientNetB0Cifar


@pytest.fixture(scope="module")
def model():
    return EfficientNetB0Cifar((32, 32, 3))


def test_downsamples_8x_with_b0s_weights_and_names(model):
    ref = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    named = lambda m: [l.name for l in m.layers if l.name.startswith(("stem_", "block", "top_"))]
    assert named(model) == named(ref) and len(named(model)) == len(model.layers) - 3  # input, rescaling, normalization
    assert model.count_params() == ref.count_params()  # strides change no weight
    sizes = {
        n: model.get_layer(n).output.shape[1]
        for n in ("stem_activation", "block2b_add", "block3b_add", "block5c_add", "top_activation")
    }
    assert sizes == {"stem_activation": 32, "block2b_add": 32, "block3b_add": 16, "block5c_add": 8, "top_activation": 4}
    assert ref.get_layer("top_activation").output.shape[1] == 1  # Keras' B0 at 32 px: 1x1 before the head


def test_exits_after_every_mbconv_block(model):
    taps = backbones.get_backbone("efficientnet_b0").tap_rule(model)
    assert len(taps) == 16 and taps[0] == "block1a_project_bn" and taps[-1] == "block7a_project_bn"


def test_costs_by_hand_and_in_every_convention(model):
    """The stem at stride 1: 32 x 32 outputs x 32 filters x 3x3x3 multiply-adds."""
    costs = complexity.layer_costs(model)
    assert costs["stem_conv"].kernel_macs == 32 * 32 * 32 * 27
    assert costs["block2a_dwconv"].macs == 32 * 32 * 96 * 9  # depthwise 3x3 on 96 channels, now at 32x32
    x = keras.layers.GlobalAveragePooling2D()(model.output)
    head = keras.Model(model.input, keras.layers.Dense(100)(x))
    c = complexity.model_complexity(head)
    assert c["kernel_macs"] < c["macs"] < c["flops"]
    assert c["trainable_params"] == 4135648  # B0's 4,007,548 trainable + a 1280 x 100 + 100 head


def test_bad_requests():
    with pytest.raises(ValueError, match="at least 32x32"):
        EfficientNetB0Cifar((16, 16, 3))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        EfficientNetB0Cifar(weights="imagenet")
