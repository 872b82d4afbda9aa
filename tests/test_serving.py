"""Batched early exit, the SavedModel export and TFLite exits (elastic_lib.early_exit.serving)."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from elastic_lib.early_exit import serving
from elastic_lib.early_exit import staged as early_exit
from elastic_lib.models.exits import build_elastic_model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(48, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def model(images):
    """A random elastic MobileNet-0.75 whose every head is rescaled so that its logits spread
    (standard deviation 1.5 over these images): confidences then differ between images and
    exits, as a trained model's do, and a threshold sends images to several exits."""
    keras.utils.set_random_seed(0)
    m = build_elastic_model("mobilenet_0.75", 10, 32, exits="all")
    for layer in m.layers:
        if isinstance(layer, keras.layers.Dense):
            feats = keras.Model(m.inputs, layer.input).predict(images, verbose=0)
            logits = feats @ layer.kernel.numpy()
            layer.kernel.assign(layer.kernel * (1.5 / max(float(logits.std()), 1e-12)))
    return m


def _spread_threshold(probs, criterion):
    """A threshold that sends images to several exits: a high quantile of the exits' confidences."""
    conf = np.concatenate([early_exit.confidence(p, criterion) for p in probs[:-1]])
    c = float(np.quantile(conf, 0.95))
    return c if criterion == "max_prob" else -c


@pytest.mark.parametrize("criterion", ["max_prob", "entropy"])
def test_batched_early_exit_equals_the_per_image_policy(model, images, criterion):
    probs = model.predict(images, verbose=0)
    t = _spread_threshold(probs, criterion)
    p, chosen = serving.BatchedEarlyExit(model, criterion).predict(images, t)
    ref = early_exit.dynamic_exit(probs, t, criterion)
    assert len(np.unique(chosen)) >= 3, np.bincount(chosen)  # several exits and stages taken
    np.testing.assert_array_equal(chosen, ref)
    np.testing.assert_allclose(p, np.stack(probs)[ref, np.arange(len(images))], rtol=1e-5, atol=1e-6)
    staged = early_exit.StagedModel(model, criterion)  # the batch-of-one staged forward, image by image
    for j in range(0, len(images), 6):
        i, q = staged.predict_dynamic(images[j : j + 1], t)
        assert i == chosen[j]
        np.testing.assert_allclose(q[0], p[j], rtol=1e-5, atol=1e-6)


def test_everyone_exits_first_or_nobody_exits(model, images):
    b = serving.BatchedEarlyExit(model)
    _, first = b.predict(images, 0.0)
    _, last = b.predict(images, 1.01)
    assert (first == 0).all() and (last == b.staged.n_exits).all()


def test_savedmodel_reloads_in_a_fresh_process_with_the_same_outputs(model, images, tmp_path):
    probs = model.predict(images, verbose=0)
    t = _spread_threshold(probs, "max_prob")
    p, chosen = serving.BatchedEarlyExit(model).predict(images, t)
    serving.export(model, str(tmp_path / "served"))  # the SavedModel entry point
    np.save(tmp_path / "x.npy", images)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "r = m.serve(tf.constant(np.load(sys.argv[2])), tf.constant(float(sys.argv[3])))\n"
        "np.save(sys.argv[4], r['probabilities'].numpy()); np.save(sys.argv[5], r['exit_index'].numpy())\n"
    )
    # plain TensorFlow, with the workbook made unimportable (sys.modules entry None: any import fails)
    code = "import sys\nsys.modules['elastic_lib'] = None\n" + code
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "served"),
            str(tmp_path / "x.npy"),
            repr(t),
            str(tmp_path / "p.npy"),
            str(tmp_path / "i.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), chosen)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), p)


def test_every_exit_converts_to_tflite(model, images, tmp_path):
    paths = serving.export_tflite(model, str(tmp_path / "tflite"))
    assert list(paths) == [f"exit{i:02d}" for i in range(1, 14)] + ["final"]
    staged = early_exit.StagedModel(model)
    for k in (0, 6, 13):
        name = list(paths)[k]
        got = serving.tflite_predict(paths[name], images[:1])
        np.testing.assert_allclose(got, np.asarray(staged.fixed(k)(images[:1])), rtol=1e-4, atol=1e-5)


def test_the_tflite_cascade_takes_the_staged_forwards_exits(model, images):
    """The lean batch-1 forward (one TFLite interpreter per stage) decides as the compiled staged
    forward does, with the same probabilities up to float rounding; at a threshold no image
    reaches it returns the final output."""
    probs = model.predict(images, verbose=0)
    t = _spread_threshold(probs, "max_prob")
    staged, cascade = early_exit.StagedModel(model), serving.TFLiteCascade(model)
    got = [cascade.predict(x[None], t) for x in images[:24]]
    want = [staged.predict_dynamic(x[None], t) for x in images[:24]]
    assert [g[0] for g in got] == [w[0] for w in want] and len({g[0] for g in got}) > 1
    np.testing.assert_allclose(np.concatenate([g[1] for g in got]), np.concatenate([w[1] for w in want]), atol=1e-5)
    i, p = cascade.predict(images[:1], 1.01)
    assert i == staged.n_exits
    np.testing.assert_allclose(p, probs[-1][:1], atol=1e-5)
    np.testing.assert_allclose(cascade.final_alone(images[:1]), probs[-1][:1], atol=1e-5)
