"""Inception-v4 (Szegedy, Ioffe, Vanhoucke, Alemi 2016, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning", arXiv:1602.07261) as a Keras functional model: the
stem (Fig. 3), 4 x Inception-A (Fig. 4), Reduction-A (Fig. 7; k, l, m, n = 192, 224, 256, 384),
7 x Inception-B (Fig. 5), Reduction-B (Fig. 8), 3 x Inception-C (Fig. 6); 1536 channels out.

Every convolution is Conv2D (no bias) -> BatchNormalization -> ReLU, named ``<unit>_conv``,
``<unit>_bn``, ``<unit>_relu``; every block ends in a Concatenate named after the block
(``stem``, ``inception_a1`` .. ``inception_a4``, ``reduction_a``, ``inception_b1`` ..
``inception_b7``, ``reduction_b``, ``inception_c1`` .. ``inception_c3``): those are the exit taps.

Options the Inception-v4 study varies:
- ``bn_epsilon``: 0.001 (the reference implementations') or 1e-5 (PyTorch's default);
- ``count_include_pad``: the 3x3 stride-1 average pooling in front of each block's pooling branch
  either excludes the padded zeros from each average (False: Keras' ``padding="same"``) or counts
  them (True: ``ZeroPadding2D(1)`` then a ``valid`` pooling, named ``<unit>_pad`` / ``<unit>_pool``).

Input: at least 75x75 (the stem's and reductions' valid convolutions need it); the reference
size is 299x299. Inception preprocessing (scale to [-1, 1]).
"""

from __future__ import annotations

MIN_SIZE = 75
BN_EPSILONS = (1e-3, 1e-5)


def _layers():
    from keras import layers

    return layers


class _Builder:
    """Conv-BN-ReLU units and pooling with the study's options, every layer named."""

    def __init__(self, bn_epsilon: float, count_include_pad: bool):
        self.eps, self.include_pad = bn_epsilon, count_include_pad
        self.L = _layers()

    def conv(self, x, filters: int, kernel, name: str, strides=1, padding="same"):
        L = self.L
        x = L.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
        x = L.BatchNormalization(epsilon=self.eps, name=f"{name}_bn")(x)
        return L.Activation("relu", name=f"{name}_relu")(x)

    def avg_pool(self, x, name: str):
        L = self.L
        if self.include_pad:
            x = L.ZeroPadding2D(1, name=f"{name}_pad")(x)
            return L.AveragePooling2D(3, strides=1, padding="valid", name=f"{name}_pool")(x)
        return L.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)

    def max_pool(self, x, name: str):
        return self.L.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)

    def concat(self, branches, name: str):
        return self.L.Concatenate(name=name)(branches)

    # ---------------------------------------------------------------- blocks
    def stem(self, x):
        x = self.conv(x, 32, 3, "stem_1", strides=2, padding="valid")
        x = self.conv(x, 32, 3, "stem_2", padding="valid")
        x = self.conv(x, 64, 3, "stem_3")
        x = self.concat(
            [self.max_pool(x, "stem_4_pool"), self.conv(x, 96, 3, "stem_4", strides=2, padding="valid")],
            "stem_4_concat",
        )
        a = self.conv(x, 64, 1, "stem_5a_1")
        a = self.conv(a, 96, 3, "stem_5a_2", padding="valid")
        b = self.conv(x, 64, 1, "stem_5b_1")
        b = self.conv(b, 64, (1, 7), "stem_5b_2")
        b = self.conv(b, 64, (7, 1), "stem_5b_3")
        b = self.conv(b, 96, 3, "stem_5b_4", padding="valid")
        x = self.concat([a, b], "stem_5_concat")
        return self.concat(
            [self.conv(x, 192, 3, "stem_6", strides=2, padding="valid"), self.max_pool(x, "stem_6_pool")], "stem"
        )

    def inception_a(self, x, name: str):
        b0 = self.conv(x, 96, 1, f"{name}_b0")
        b1 = self.conv(self.conv(x, 64, 1, f"{name}_b1_1"), 96, 3, f"{name}_b1_2")
        b2 = self.conv(self.conv(self.conv(x, 64, 1, f"{name}_b2_1"), 96, 3, f"{name}_b2_2"), 96, 3, f"{name}_b2_3")
        b3 = self.conv(self.avg_pool(x, f"{name}_b3"), 96, 1, f"{name}_b3")
        return self.concat([b0, b1, b2, b3], name)

    def reduction_a(self, x, k=192, l=224, m=256, n=384):
        b0 = self.conv(x, n, 3, "reduction_a_b0", strides=2, padding="valid")
        b1 = self.conv(self.conv(x, k, 1, "reduction_a_b1_1"), l, 3, "reduction_a_b1_2")
        b1 = self.conv(b1, m, 3, "reduction_a_b1_3", strides=2, padding="valid")
        return self.concat([b0, b1, self.max_pool(x, "reduction_a_b2_pool")], "reduction_a")

    def inception_b(self, x, name: str):
        b0 = self.conv(x, 384, 1, f"{name}_b0")
        b1 = self.conv(x, 192, 1, f"{name}_b1_1")
        b1 = self.conv(self.conv(b1, 224, (1, 7), f"{name}_b1_2"), 256, (7, 1), f"{name}_b1_3")
        b2 = self.conv(x, 192, 1, f"{name}_b2_1")
        for i, (f, k) in enumerate(((192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))), start=2):
            b2 = self.conv(b2, f, k, f"{name}_b2_{i}")
        b3 = self.conv(self.avg_pool(x, f"{name}_b3"), 128, 1, f"{name}_b3")
        return self.concat([b0, b1, b2, b3], name)

    def reduction_b(self, x):
        b0 = self.conv(self.conv(x, 192, 1, "reduction_b_b0_1"), 192, 3, "reduction_b_b0_2", strides=2, padding="valid")
        b1 = self.conv(x, 256, 1, "reduction_b_b1_1")
        b1 = self.conv(self.conv(b1, 256, (1, 7), "reduction_b_b1_2"), 320, (7, 1), "reduction_b_b1_3")
        b1 = self.conv(b1, 320, 3, "reduction_b_b1_4", strides=2, padding="valid")
        return self.concat([b0, b1, self.max_pool(x, "reduction_b_b2_pool")], "reduction_b")

    def inception_c(self, x, name: str):
        b0 = self.conv(x, 256, 1, f"{name}_b0")
        b1 = self.conv(x, 384, 1, f"{name}_b1_1")
        b1 = self.concat(
            [self.conv(b1, 256, (1, 3), f"{name}_b1_2a"), self.conv(b1, 256, (3, 1), f"{name}_b1_2b")], f"{name}_b1"
        )
        b2 = self.conv(
            self.conv(self.conv(x, 384, 1, f"{name}_b2_1"), 448, (3, 1), f"{name}_b2_2"), 512, (1, 3), f"{name}_b2_3"
        )
        b2 = self.concat(
            [self.conv(b2, 256, (1, 3), f"{name}_b2_4a"), self.conv(b2, 256, (3, 1), f"{name}_b2_4b")], f"{name}_b2"
        )
        b3 = self.conv(self.avg_pool(x, f"{name}_b3"), 256, 1, f"{name}_b3")
        return self.concat([b0, b1, b2, b3], name)


def block_names() -> list[str]:
    """The 17 block outputs, shallowest first (the default exit taps; the last feeds the final head)."""
    return (
        ["stem"]
        + [f"inception_a{i}" for i in range(1, 5)]
        + ["reduction_a"]
        + [f"inception_b{i}" for i in range(1, 8)]
        + ["reduction_b"]
        + [f"inception_c{i}" for i in range(1, 4)]
    )


def check_options(input_shape, bn_epsilon: float, count_include_pad) -> None:
    size = min(input_shape[:2])
    if size < MIN_SIZE:
        raise ValueError(
            f"inception_v4 needs inputs of at least {MIN_SIZE}x{MIN_SIZE} (its valid stem and reduction "
            f"convolutions), got {input_shape[0]}x{input_shape[1]}; resize the images (image_size >= {MIN_SIZE})"
        )
    if bn_epsilon not in BN_EPSILONS:
        raise ValueError(f"bn_epsilon must be one of {BN_EPSILONS} (the study's settings), got {bn_epsilon!r}")
    if not isinstance(count_include_pad, bool):
        raise ValueError(f"count_include_pad must be True or False, got {count_include_pad!r}")


def InceptionV4(input_shape=(299, 299, 3), weights=None, bn_epsilon: float = 1e-3, count_include_pad: bool = False):
    """The Inception-v4 feature extractor (no top): 1536 channels out (8x8 at 299x299).
    ``weights``: None (random) or the path of a Keras weights file of this architecture."""
    import keras

    check_options(input_shape, bn_epsilon, count_include_pad)
    b = _Builder(bn_epsilon, count_include_pad)
    inputs = keras.Input(input_shape, name="input")
    x = b.stem(inputs)
    for i in range(1, 5):
        x = b.inception_a(x, f"inception_a{i}")
    x = b.reduction_a(x)
    for i in range(1, 8):
        x = b.inception_b(x, f"inception_b{i}")
    x = b.reduction_b(x)
    for i in range(1, 4):
        x = b.inception_c(x, f"inception_c{i}")
    model = keras.Model(inputs, x, name="inception_v4")
    if weights not in (None, "imagenet"):
        model.load_weights(weights)
    elif weights == "imagenet":
        raise ValueError("no Keras ImageNet weights exist for inception_v4: use weights=None or a local weights file")
    return model
