"""The registry's toy backbone ``tiny_cnn``: trains in seconds, for tests and demos."""

from __future__ import annotations


def tiny_cnn(input_shape=(32, 32, 3), weights=None):
    """A toy backbone for tests and demos (timm keeps such ``test_*`` models in its registry too): three
    blocks of 3x3 convolution (8, 16, 32 filters, stride 2, "same" padding) -> BatchNorm -> ReLU, named
    ``block{1,2,3}_conv|_bn|_out``; the exits tap each block's ReLU (``block{1,2,3}_out``). At 16x16 an
    elastic model trains an epoch on a thousand digits in about a second on a CPU core, so tests of the
    driver, faults, resume and provenance run the real experiment notebook in seconds. Not in the paper.

    Input: any size of at least 8x8 (three halvings leave at least one pixel); preprocessing: MobileNet's
    ([-1, 1]). ``weights``: None (random init) or a weights file of this architecture."""
    import keras
    from keras import layers

    x = inp = keras.Input(shape=input_shape, name="input_layer")
    for i, filters in enumerate((8, 16, 32), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.Activation("relu", name=f"block{i}_out")(x)
    model = keras.Model(inp, x, name="tiny_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model
