"""Inception-v4 (elastic_lib.models.builders.inception_v4) against the Inception-v4 study's own figures:
42.68 M parameters and 6.31 G "FLOPs" (thop, which the study ran at 229x229, see below)."""

import keras
import numpy as np
import pytest

from elastic_lib.models import complexity
from elastic_lib.models.builders.inception_v4 import MIN_SIZE, InceptionV4, block_names


def _classifier(size, **options):
    base = InceptionV4((size, size, 3), **options)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    return base, keras.Model(base.input, keras.layers.Dense(1000, name="fc")(x))


@pytest.fixture(scope="module")
def at_299():
    return _classifier(299)


def test_parameters_match_the_study(at_299):
    """42.68 M: the study counts PyTorch parameters (BatchNorm's running statistics are buffers,
    not parameters), i.e. Keras' trainable weights; the moving statistics come on top."""
    base, model = at_299
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert round(trainable / 1e6, 2) == 42.68
    bn_channels = sum(
        layer.gamma.shape[0] for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert complexity.model_complexity(model)["non_trainable_params"] == 2 * bn_channels
    assert tuple(base.output.shape[1:]) == (8, 8, 1536)


def test_block_outputs_are_the_named_taps(at_299):
    base, _ = at_299
    names = block_names()
    assert len(names) == 17 and names[0] == "stem" and names[-1] == "inception_c3"
    shapes = {n: tuple(base.get_layer(n).output.shape[1:]) for n in names}
    assert shapes["stem"] == (35, 35, 384) and shapes["inception_a4"] == (35, 35, 384)
    assert shapes["reduction_a"] == (17, 17, 1024) and shapes["inception_b7"] == (17, 17, 1024)
    assert shapes["reduction_b"] == (8, 8, 1536) and shapes["inception_c3"] == (8, 8, 1536)
    assert base.layers[-1].name == "inception_c3"


def test_the_studys_flops_are_thop_at_229_pixels():
    """The study's op counter (misc/op_counter.py of its repository) profiles a 229x229 input
    with thop: multiply-adds of convolutions and the linear layer, plus 2 per BatchNorm output
    and kernel + 1 per average-pooling output. Our walker's ``macs`` at 229 plus those terms,
    computed here from the layer shapes, gives the study's 6.31 G; at 299 ``macs`` is 12.25 G."""
    base, model = _classifier(229)
    macs = complexity.model_complexity(model)["macs"]
    bn = sum(
        2 * int(np.prod(l.output.shape[1:])) for l in base.layers if isinstance(l, keras.layers.BatchNormalization)
    )
    pool = sum(
        10 * int(np.prod(l.output.shape[1:])) for l in base.layers if isinstance(l, keras.layers.AveragePooling2D)
    )
    assert round((macs + bn + pool) / 1e9, 2) == 6.31
    assert round(macs / 1e9, 2) == 6.27


def test_minimum_size_is_enforced_and_builds():
    assert tuple(InceptionV4((MIN_SIZE, MIN_SIZE, 3)).output.shape[1:]) == (1, 1, 1536)
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE}x{MIN_SIZE}"):
        InceptionV4((MIN_SIZE - 1, MIN_SIZE - 1, 3))


def test_options_bn_epsilon_and_count_include_pad():
    m = InceptionV4((MIN_SIZE, MIN_SIZE, 3), bn_epsilon=1e-5, count_include_pad=True)
    assert {l.epsilon for l in m.layers if isinstance(l, keras.layers.BatchNormalization)} == {1e-5}
    assert isinstance(m.get_layer("inception_a1_b3_pad"), keras.layers.ZeroPadding2D)
    # the two poolings on ones: a corner averages 4 real values; excluded padding gives 1, counted 4/9
    x = np.ones((1, 5, 5, 1), "float32")
    exclude = keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
    include = keras.layers.AveragePooling2D(3, strides=1)(keras.layers.ZeroPadding2D(1)(x))
    assert float(exclude[0, 0, 0, 0]) == pytest.approx(1.0) and float(include[0, 0, 0, 0]) == pytest.approx(4 / 9)
    assert InceptionV4((MIN_SIZE, MIN_SIZE, 3)).get_layer("inception_a1_b3_pool").padding == "same"
    with pytest.raises(ValueError, match="bn_epsilon"):
        InceptionV4((MIN_SIZE, MIN_SIZE, 3), bn_epsilon=0.01)
    with pytest.raises(ValueError, match="no Keras ImageNet weights"):
        InceptionV4((MIN_SIZE, MIN_SIZE, 3), weights="imagenet")


@pytest.mark.parametrize("exits, n_outputs", [("all", 18), ("none", 1)])
def test_the_registry_entry_builds_at_299_with_and_without_exits(exits, n_outputs):
    from elastic_lib.models.exits import build_elastic_model

    model = build_elastic_model("inception_v4", 10, 299, exits=exits, final_head="gap")
    assert len(model.outputs) == n_outputs and model.get_layer("inception_c3").output.shape[1:] == (8, 8, 1536)


def test_run_options_reach_the_builder_and_other_backbones_refuse_them():
    from elastic_lib.control.config import ConfigError, RunConfig
    from elastic_lib.models.exits import build_elastic_model

    cfg = RunConfig(backbone="inception_v4", image_size=MIN_SIZE, bn_epsilon=1e-5, count_include_pad=True).validate()
    assert cfg.backbone_options == {"bn_epsilon": 1e-5, "count_include_pad": True}
    assert RunConfig(backbone="inception_v4", image_size=MIN_SIZE).backbone_options == {"count_include_pad": False}
    model = build_elastic_model("inception_v4", 10, MIN_SIZE, exits="none", backbone_options=cfg.backbone_options)
    assert model.get_layer("stem_1_bn").epsilon == 1e-5 and model.get_layer("inception_c3_b3_pad")
    with pytest.raises(ConfigError, match="count_include_pad=True is an option of backbones that have it"):
        RunConfig(backbone="vgg16", count_include_pad=True).validate()
    with pytest.raises(ConfigError, match="below inception_v4's minimum input size 75"):
        RunConfig(backbone="inception_v4", image_size=64).validate()


def test_no_imagenet_weights_are_offered_or_downloaded(tmp_path):
    from elastic_lib.control.config import ConfigError, RunConfig
    from elastic_lib.models import weights

    with pytest.raises(ValueError, match="inception_v4 has no Keras ImageNet weights"):
        weights.download(["inception_v4"], str(tmp_path), build=lambda name: pytest.fail("nothing is built"))
    with pytest.raises(ConfigError, match="efficientnet_b0_cifar has no Keras ImageNet weights"):
        RunConfig(backbone="efficientnet_b0_cifar", weights="imagenet").validate()
