"""EfficientNet-B0 for 32x32 inputs (issue 13; the MicroNet entry "changed the structure to meet the
input size of 32x32" without saying how). Keras' EfficientNetB0 downsamples 32x: a 32x32 image
leaves the stem at 16x16 and reaches the head at 1x1. Here two strides become 1:

- the stem convolution (``stem_conv``, stride 2 -> 1), and
- the first stride-2 stage's depthwise convolution (``block2a_dwconv``, stride 2 -> 1),

so the network downsamples 8x: 32 -> 32 (stem) -> 32 (stage 2) -> 16 (stage 3) -> 8 (stage 4, 5)
-> 4 (stage 6, 7, head). Every other layer, name and weight shape is Keras' EfficientNetB0 (the
7 stages, 16 MBConv blocks, squeeze-and-excitation, swish); the exits are the registry's
``efficientnet_b0`` taps (every MBConv block's output). The two changed layers keep their names;
their padding becomes symmetric (1 pixel), i.e. "same" at stride 1.
"""

from __future__ import annotations

STRIDE_ONE = ("stem_conv", "block2a_dwconv")  # the layers whose stride 2 becomes 1
MIN_SIZE = 32


def EfficientNetB0Cifar(input_shape=(32, 32, 3), weights=None):
    """The no-top EfficientNet-B0 with the strides above; ``weights``: None or a weights file of
    this architecture (ImageNet weights do not apply: the strides differ)."""
    import keras

    if min(input_shape[:2]) < MIN_SIZE:
        raise ValueError(
            f"efficientnet_b0_cifar needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, got "
            f"{input_shape[0]}x{input_shape[1]}"
        )
    if weights == "imagenet":
        raise ValueError(
            "efficientnet_b0_cifar has no ImageNet weights (its strides differ from EfficientNetB0's); "
            "use weights=None or a weights file of this architecture"
        )
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=input_shape)
    config = base.get_config()
    for spec in config["layers"]:
        name = spec["config"]["name"]
        if name in STRIDE_ONE:
            spec["config"]["strides"] = (1, 1)
        if name in (f"{n}_pad" for n in STRIDE_ONE):
            spec["config"]["padding"] = ((1, 1), (1, 1))
        if spec["class_name"] != "InputLayer":
            spec.pop("build_config", None)  # spatial sizes change downstream
    config["name"] = "efficientnet_b0_cifar"
    model = keras.Model.from_config(config)
    if weights is not None:
        model.load_weights(weights)
    return model
