"""ResNet50 as the paper's code built it (Keras 2.1.5): the registry's ``resnet50_legacy``.

Reference: He et al., Deep Residual Learning for Image Recognition (CVPR 2016); Keras 2.1.5's
``keras.applications.ResNet50``. Input: at least 197x197 (its valid 7x7 average pool); preprocessing:
``keras.applications.resnet50.preprocess_input`` (caffe: BGR, ImageNet means subtracted).
"""

from __future__ import annotations


def resnet50_legacy(input_shape=(224, 224, 3), weights=None):
    """ResNet50 as in Keras 2.1.5 (the paper's code): no zero-padding before the first
    3x3/2 max-pool (55x55 maps after it at 224 input) and a 7x7 average pool at the end of
    the backbone. Same parameter count as today's ResNet50; layer names follow today's Keras
    so that today's ImageNet weights load by name."""
    import keras
    from keras import layers

    bn_axis = 3
    inp = keras.Input(shape=input_shape, name="input_layer")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inp)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)  # no padding: 112 -> 55

    def block(x, filters, stride, shortcut, name):
        if shortcut:
            s = layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
            s = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_0_bn")(s)
        else:
            s = x
        x = layers.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_1_bn")(x)
        x = layers.Activation("relu", name=name + "_1_relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_2_bn")(x)
        x = layers.Activation("relu", name=name + "_2_relu")(x)
        x = layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=name + "_3_bn")(x)
        x = layers.Add(name=name + "_add")([s, x])
        return layers.Activation("relu", name=name + "_out")(x)

    for stage, (filters, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=2):
        for b in range(1, blocks + 1):
            x = block(x, filters, stride if b == 1 else 1, b == 1, f"conv{stage}_block{b}")
    x = layers.AveragePooling2D(7, name="avg_pool")(x)
    model = keras.Model(inp, x, name="resnet50_legacy")
    if weights == "imagenet":
        donor = keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=input_shape)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(donor.get_layer(layer.name).get_weights())
    elif weights is not None:
        model.load_weights(weights)
    return model
