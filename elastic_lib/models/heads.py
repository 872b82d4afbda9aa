"""Heads and losses of the MicroNet training tricks, for any output (exits and final):

- ``CosineSoftmax``: the "cosine linear" head of AM-softmax (Wang et al. 2018, arXiv:1801.05599):
  features and class weights L2-normalised, logits ``scale * cos(theta)``, softmax. It outputs
  probabilities, like every other head, so metrics and the early-exit policies work unchanged.
- ``am_softmax_loss(scale, margin)``: the additive-margin softmax loss, -log of
  e^{s(cos_y - m)} / (e^{s(cos_y - m)} + sum_{j != y} e^{s cos_j}), computed from the head's
  probabilities p = softmax(s cos): -log p_y + s m + log(1 - p_y (1 - e^{-s m})). With m = 0 it is
  the cross-entropy (the MicroNet entry used s = 5, m = 0). Like Keras' cross-entropy on
  probabilities, p_y is clipped at 1e-7: exact while p_y > 1e-7, which softmax(s cos) guarantees
  when e^{-2s} / classes > 1e-7 (s up to about 5.8 for 100 classes); larger scales (face
  recognition's s = 30) would need the loss on the logits.
- ``SelfDistillation``: an exit also learns from the final output's softened predictions
  (temperature T, weight w; cf. Zhang et al. 2019): it adds w T^2 KL(q_final || q_exit), where
  q = softmax(log p / T), to the model's losses, the teacher side behind ``stop_gradient``, and
  passes the exit's probabilities through unchanged.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="elastic")
class CosineSoftmax(keras.layers.Layer):
    """softmax(scale * cos(theta)) over ``units`` classes, theta the angle between the features and
    each class weight (both L2-normalised); no bias."""

    def __init__(self, units: int, scale: float = 5.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # as the other heads: float32 under mixed precision
        super().__init__(**kwargs)
        if units < 2 or scale <= 0:
            raise ValueError(f"CosineSoftmax needs units >= 2 and scale > 0, got {units}, {scale}")
        self.units, self.scale = int(units), float(scale)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")

    def cosine(self, x):
        x = x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), 1e-12))
        w = self.kernel / ops.sqrt(ops.maximum(ops.sum(self.kernel * self.kernel, axis=0, keepdims=True), 1e-12))
        return ops.matmul(x, w)

    def call(self, x):
        return ops.softmax(self.scale * self.cosine(x), axis=-1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}

    def elastic_cost(self, input_shape, output_shape) -> dict:
        """Inference cost for ``elastic_lib.models.complexity`` (batch of one): the matmul as a Dense's
        (``kernel_macs``); normalising the features (a square, add, root and divide per element),
        the scale and the softmax as element-wise work; the class weights' norms are constants."""
        n_in, n_out = int(input_shape[-1]), int(output_shape[-1])
        return {"kernel_macs": n_in * n_out, "macs": n_in * n_out, "mults": 2 * n_in + n_out, "adds": n_in + 3 * n_out}


def am_softmax_loss(scale: float = 5.0, margin: float = 0.0):
    """Sparse-label AM-softmax loss on the probabilities of a ``CosineSoftmax`` of the same scale."""
    if margin < 0:
        raise ValueError(f"am_margin must be >= 0, got {margin}")
    shrink = 1.0 - float(keras.ops.convert_to_numpy(ops.exp(-scale * margin)))

    def loss(y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        p_y = ops.take_along_axis(ops.clip(y_pred, 1e-7, 1.0), y[:, None], axis=-1)[:, 0]
        return -ops.log(p_y) + scale * margin + ops.log(ops.maximum(1.0 - p_y * shrink, 1e-7))

    loss.__name__ = f"am_softmax_s{scale:g}_m{margin:g}"
    return loss


def soften(p, temperature: float):
    """softmax(log p / T): the probabilities of logits / T."""
    return ops.softmax(ops.log(ops.clip(p, 1e-30, 1.0)) / temperature, axis=-1)  # 1e-30: float32 keeps it


@keras.saving.register_keras_serializable(package="elastic")
class SelfDistillation(keras.layers.Layer):
    """Inputs [exit probabilities, final probabilities]; output the exit's, unchanged. In training
    it adds ``weight * T^2 * KL(soften(final) || soften(exit))``, the final side a constant
    (``stop_gradient``): the exit learns from the final output, never the other way round."""

    def __init__(self, temperature: float = 3.0, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0 or weight < 0:
            raise ValueError(f"distillation needs temperature > 0 and weight >= 0, got {temperature}, {weight}")
        self.temperature, self.weight = float(temperature), float(weight)

    def distillation(self, exit_p, final_p):
        t = self.temperature
        teacher = ops.stop_gradient(soften(final_p, t))
        student = soften(exit_p, t)
        kl = ops.sum(
            teacher * (ops.log(ops.clip(teacher, 1e-30, 1.0)) - ops.log(ops.clip(student, 1e-30, 1.0))), axis=-1
        )
        return self.weight * t * t * ops.mean(kl)

    def call(self, inputs, training=None):
        exit_p, final_p = inputs
        if training:
            self.add_loss(self.distillation(exit_p, final_p))
        return exit_p

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "weight": self.weight}


def with_self_distillation(model: keras.Model, temperature: float, weight: float) -> keras.Model:
    """The model to *train* for self-distillation: the same layers and weights, every exit's output
    passed through a ``SelfDistillation`` against the final output (named ``distill_NN``).
    Its outputs equal ``model``'s (exits first, final last), so evaluation, early exit and export
    use ``model`` itself, which never carries the distillation layers."""
    final = model.outputs[-1]
    outs = [
        SelfDistillation(temperature, weight, name=f"distill_{i:02d}")([p, final])
        for i, p in enumerate(model.outputs[:-1], start=1)
    ]
    return keras.Model(model.inputs, [*outs, final], name=f"{model.name}_self_distillation")
