"""MicroNet heads and losses (elastic_lib.models.heads) against NumPy references."""

import keras
import numpy as np
import pytest

from elastic_lib.models import heads

pytestmark = pytest.mark.backend  # ./run_tests.sh runs this file on every backend


def _np_am_loss(x, w, y, s, m):
    """The AM-softmax loss from its definition: logits s (cos - m [true class]), cross-entropy."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = xn @ wn
    logits = s * (cos - m * np.eye(w.shape[1])[y])
    logits -= logits.max(1, keepdims=True)
    return cos, -(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(1)))


@pytest.mark.parametrize("s, m", [(5.0, 0.0), (5.0, 0.35), (8.0, 0.2)])
def test_am_softmax_logits_and_loss_match_numpy(s, m):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.integers(0, 7, 64)
    layer = heads.CosineSoftmax(7, scale=s)
    p = keras.ops.convert_to_numpy(layer(x))
    cos_ref, loss_ref = _np_am_loss(x.astype(float), keras.ops.convert_to_numpy(layer.kernel).astype(float), y, s, m)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.cosine(x)), cos_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.log(p), s * cos_ref - np.log(np.exp(s * cos_ref).sum(1, keepdims=True)), atol=1e-4)
    got = keras.ops.convert_to_numpy(heads.am_softmax_loss(s, m)(y, p))
    np.testing.assert_allclose(got, loss_ref, rtol=1e-4, atol=1e-4)


def test_margin_zero_is_the_cross_entropy():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
    y = np.array([0, 2])
    got = keras.ops.convert_to_numpy(heads.am_softmax_loss(5.0, 0.0)(y, p))
    np.testing.assert_allclose(got, -np.log([0.7, 0.6]), rtol=1e-6)
    with pytest.raises(ValueError, match="am_margin"):
        heads.am_softmax_loss(5.0, -0.1)


@pytest.mark.requires_tensorflow
def test_self_distillation_leaves_the_final_head_free_of_its_gradient():
    """Two heads on one feature: the distillation term moves the exit head only."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    feat = keras.layers.Dense(16, activation="relu", name="trunk")(inp)
    exit_p = keras.layers.Dense(5, activation="softmax", name="exit_head")(feat)
    final_p = keras.layers.Dense(5, activation="softmax", name="final_head")(feat)
    distilled = heads.SelfDistillation(temperature=3.0, weight=1.0, name="distill")([exit_p, final_p])
    model = keras.Model(inp, [distilled, final_p])
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.add_n(model.losses)
    assert float(loss) > 0
    grads = dict(zip([v.path for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))
    assert all(
        g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for k, g in grads.items() if k.startswith("final_head")
    )
    assert float(tf.reduce_max(tf.abs(grads["exit_head/kernel"]))) > 0
    np.testing.assert_array_equal(out[0].numpy(), model.get_layer("exit_head")(model.get_layer("trunk")(x)).numpy())
    # the KL itself, by hand
    t = 3.0
    soft = lambda q: np.exp(np.log(q) / t) / np.exp(np.log(q) / t).sum(1, keepdims=True)
    e, f = (np.asarray(model.get_layer(n)(model.get_layer("trunk")(x))) for n in ("exit_head", "final_head"))
    kl = (soft(f) * (np.log(soft(f)) - np.log(soft(e)))).sum(1).mean() * t * t
    assert float(loss) == pytest.approx(kl, rel=1e-4)
    model(x, training=False)
    assert not model.losses  # inference adds no distillation term


@pytest.mark.slow
def test_a_self_distillation_run_adds_the_distillation_term_to_the_training_loss(tmp_path):
    """Run option ``self_distillation``: the trained loss is the outputs' cross-entropies plus a
    positive distillation term; the saved model has no distillation layer; a baseline refuses it."""
    from tiny import BACKBONE, TINY

    from elastic_lib import experiment
    from elastic_lib.control.config import ConfigError, RunConfig

    tiny = {
        **TINY,
        "backbone": BACKBONE,
        "limit_per_class": 6,
        "test_limit_per_class": 3,
        "phase2_epochs": 0,
        "head": "am_softmax",
    }
    exp = experiment.run({**tiny, "self_distillation": True, "distill_weight": 5.0, "output_dir": str(tmp_path)})
    row = exp.history.iloc[0]
    per_output = sum(row[f"{name}_loss"] for name in exp.exits["output"])  # uniform loss weights: 1 each
    assert row["loss"] > per_output + 1e-3, (row["loss"], per_output)
    assert not any(isinstance(layer, heads.SelfDistillation) for layer in exp.model.layers)
    assert isinstance(exp.model.get_layer("final_softmax"), heads.CosineSoftmax)
    with pytest.raises(ConfigError, match="self_distillation needs exits"):
        RunConfig(**{**tiny, "variant": "baseline", "self_distillation": True}).validate()
