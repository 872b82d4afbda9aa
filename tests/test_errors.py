"""build_elastic_model refuses bad input with a ValueError that names the valid values."""

import keras
import pytest

from elastic_lib.control.registry import get_backbone
from elastic_lib.models.exits import build_elastic_model

# Keras warns once per layer while it tries to load a mismatched weights file
pytestmark = pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backbone") as err:
        build_elastic_model("mobilenet_075", 10, 32)
    assert "'mobilenet_075'" in str(err.value)
    assert "mobilenet_0.75" in str(err.value) and "resnet50" in str(err.value)
    with pytest.raises(ValueError, match="mobilenet_0.75"):
        get_backbone(None)


def test_exit_spec_naming_no_layer():
    with pytest.raises(ValueError) as err:
        build_elastic_model("mobilenet_0.75", 10, 32, exits=["conv_pw_1_relu", "conv_pw_99_relu"])
    msg = str(err.value)
    assert "conv_pw_99_relu" in msg and "conv_pw_13_relu" in msg  # the bad name and the valid taps


def test_bad_exit_specs():
    with pytest.raises(ValueError, match="deeper_half"):
        build_elastic_model("vgg16", 10, 32, exits="half")
    with pytest.raises(ValueError, match="non-empty"):
        build_elastic_model("vgg16", 10, 32, exits=[])
    with pytest.raises(ValueError, match="repeats"):
        build_elastic_model("vgg16", 10, 32, exits=["block1_pool", "block1_pool"])


def test_image_size_below_minimum():
    with pytest.raises(ValueError, match="75") as err:
        build_elastic_model("inception_v3", 10, 74)
    assert "74" in str(err.value)
    with pytest.raises(ValueError, match="197"):
        build_elastic_model("resnet50_legacy", 10, 196)
    with pytest.raises(ValueError, match="int"):
        build_elastic_model("vgg16", 10, 32.0)


def test_bad_final_head():
    with pytest.raises(ValueError) as err:
        build_elastic_model("vgg16", 10, 32, final_head="avgpool")
    assert "flatten" in str(err.value) and "gap" in str(err.value)


@pytest.mark.parametrize("num_classes", [1, 0, True, 2.0])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        build_elastic_model("vgg16", num_classes, 32)


def test_bad_dropout():
    with pytest.raises(ValueError, match="dropout"):
        build_elastic_model("vgg16", 10, 32, dropout=1.0)


def test_weights_file_not_found(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(ValueError, match="not found") as err:
        build_elastic_model("mobilenet_0.75", 10, 32, weights=str(missing))
    assert str(missing) in str(err.value)


@pytest.fixture(scope="module")
def vgg16_weights(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(str(path))
    return str(path)


def test_weights_of_another_architecture_are_refused(vgg16_weights):
    with pytest.raises(ValueError, match="does not match the mobilenet_0.75 architecture") as err:
        build_elastic_model("mobilenet_0.75", 10, 32, weights=vgg16_weights)
    assert vgg16_weights in str(err.value)


def test_weights_of_another_width_are_refused(tmp_path):
    """A file of the same family but another width (MobileNet 1.0 into MobileNet-0.75) is refused
    too, and the message names the architecture and input size it was checked against."""
    keras.utils.set_random_seed(0)
    path = str(tmp_path / "mobilenet_1.0.weights.h5")
    keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match="does not match the mobilenet_0.75 architecture at 32x32"):
        build_elastic_model("mobilenet_0.75", 10, 32, weights=path)


def test_matching_weights_file_loads(tmp_path):
    keras.utils.set_random_seed(1)
    donor = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "vgg16_notop.weights.h5")
    donor.save_weights(path)
    model = build_elastic_model("vgg16", 10, 32, exits="none", weights=path)
    for name in ("block1_conv1", "block5_conv3"):
        for a, b in zip(donor.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            assert (a == b).all()


def test_experiment_steps_out_of_order_say_what_to_run_first(tmp_path):
    from elastic_lib.experiment import Experiment

    exp = Experiment({"output_dir": str(tmp_path / "run")})
    with pytest.raises(RuntimeError, match=r"train\(\) needs splits, model"):
        exp.train()
    with pytest.raises(RuntimeError, match=r"latency\(\) needs policies, costs"):
        exp.latency()  # the dynamic policy's threshold comes from early_exit()
    with pytest.raises(RuntimeError, match=r"summary\(\) needs exits, latency_df, history"):
        exp.finish()
    assert exp.model is None and exp.policies is None  # every attribute exists from the start
