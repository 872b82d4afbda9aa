"""The workbook on every Keras 3 backend (TensorFlow, JAX, PyTorch).

- ``EpochPlan`` orders the epochs of both input paths as a pure function of (seed, phase, epoch);
  the backend-neutral loader (``pipeline.ArrayBatches``) yields the ``tf.data`` path's batches.
- TensorFlow-only steps refuse early, naming the backend they need.
- Parameter and FLOPs counts are those of the golden file on every backend (over the whole
  registry), and an experiment runs end to end on JAX. The other backends' environments are the ones
  ``./run_tests.sh`` sets up (``.venv-jax``, ``.venv-torch``, see ``scripts/env.sh``).
"""

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import REFERENCE_DIR  # noqa: F401  (the tests' conftest first: environment before Keras)
from elastic_lib.control import backend
from elastic_lib.control.config import ConfigError, RunConfig
from elastic_lib.control.registry import get_backbone
from elastic_lib.data.arrays import load_dataset
from elastic_lib.data.pipeline import ArrayBatches, EpochPlan, flip_translate, num_batches
from elastic_lib.models.backbones import preprocess_input

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.backend  # ./run_tests.sh runs this file on every backend


def other_python(name: str) -> str:
    """The interpreter of backend ``name``'s environment, or skip (./run_tests.sh sets them up)."""
    path = os.path.join(ROOT, f".venv-{name}", "bin", "python")
    if not os.path.exists(path):
        pytest.skip(f"no {name} environment at {path}: ./run_tests.sh sets it up (ELASTIC_TEST_BACKENDS)")
    return path


# ---------------------------------------------------------------- the epoch order
def test_epoch_plan_is_a_function_of_seed_phase_and_epoch():
    plan = EpochPlan(50, seed=7, phase=2, pad=3)
    rows = plan.rows(4)
    np.testing.assert_array_equal(rows, EpochPlan(50, seed=7, phase=2, pad=3).rows(4))  # no hidden state
    assert sorted(rows[:, 0]) == list(range(50)) and list(rows[:, 0]) != list(range(50))
    assert set(rows[:, 1]) == {0, 1} and rows[:, 2:].min() >= 0 and rows[:, 2:].max() <= 6
    for other in (plan.rows(5), EpochPlan(50, seed=8, phase=2).rows(4), EpochPlan(50, seed=7, phase=1).rows(4)):
        assert list(other[:, 0]) != list(rows[:, 0])
    np.testing.assert_array_equal(EpochPlan(50, shuffle=False).rows(3)[:, 0], np.arange(50))
    np.testing.assert_array_equal(EpochPlan(50, shuffle=False).rows(3)[:, 1:], 0)


def test_a_resumed_stream_is_the_tail_of_the_uninterrupted_one():
    s = load_dataset("digits", limit_per_class=5)  # 40 train images: 3 batches of 16 per epoch
    pre = preprocess_input("mobilenet_0.75")
    plan = EpochPlan(len(s.y_train), seed=1, phase=2, pad=2)
    whole = ArrayBatches(s.x_train, s.y_train, 16, pre, 16, 2, plan, epochs=3)
    resumed = ArrayBatches(s.x_train, s.y_train, 16, pre, 16, 2, plan, epochs=1, first_epoch=2)
    per_epoch = num_batches(len(s.y_train), 16)
    assert len(whole) == 3 * per_epoch and len(resumed) == per_epoch
    for i in range(per_epoch):
        a, b = whole[2 * per_epoch + i], resumed[i]
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1][1], b[1][1])
    labels = np.concatenate([whole[i][1][0] for i in range(per_epoch)])
    assert sorted(labels) == sorted(s.y_train)  # an epoch visits every image once
    with pytest.raises(IndexError):
        whole[len(whole)]


def test_flip_translate_against_explicit_loops():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 5, 2)).astype(np.float32)
    rows = np.array([[0, 1, 0, 4], [1, 0, 2, 2], [2, 1, 3, 1]])
    pad = 2
    got = flip_translate(x, rows, pad)
    want = np.zeros_like(x)
    for k, (_, flip, dy, dx) in enumerate(rows):
        img = x[k, :, ::-1] if flip else x[k]
        for r in range(5):
            for c in range(5):
                rr, cc = r + dy - pad, c + dx - pad  # output pixel (r, c) reads input (r + dy - pad, ...)
                if 0 <= rr < 5 and 0 <= cc < 5:
                    want[k, r, c] = img[rr, cc]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(flip_translate(x, np.array([[0, 0, pad, pad]] * 3), pad), x)  # no move


@pytest.mark.requires_tensorflow
@pytest.mark.parametrize(
    "shuffle,pad,one_hot,size", [(False, 0, False, 16), (True, 0, False, 32), (True, 3, False, 24), (True, 0, True, 8)]
)
def test_loader_yields_the_tf_data_batches(shuffle, pad, one_hot, size):
    """Same splits, order, augmentation and preprocessing: labels equal, images to float rounding."""
    from elastic_lib.data.pipeline import make_pipeline

    s = load_dataset("digits", limit_per_class=12)
    y = np.eye(10, dtype=np.float32)[s.y_train] if one_hot else s.y_train
    pre = preprocess_input("resnet50") if size == 24 else preprocess_input("mobilenet_0.75")
    plan = EpochPlan(len(y), seed=5, phase=2, shuffle=shuffle, pad=pad)
    fast = make_pipeline(s.x_train, y, size, pre, 20, 3, plan, epochs=2, first_epoch=1)
    neutral = ArrayBatches(s.x_train, y, size, pre, 20, 3, plan, epochs=2, first_epoch=1)
    assert int(fast.cardinality()) == len(neutral) == 2 * num_batches(len(y), 20)
    for i, (xb, yb) in enumerate(fast):
        nx, ny = neutral[i]
        assert len(yb) == len(ny) == 3
        np.testing.assert_array_equal(yb[2].numpy(), ny[2])
        np.testing.assert_allclose(xb.numpy(), nx, rtol=0, atol=1e-4 if size == 24 else 1e-5)  # caffe mode: 0..255
    assert i + 1 == len(neutral)


# ---------------------------------------------------------------- TensorFlow-only steps
def test_tensorflow_only_steps_refuse_on_another_backend(monkeypatch):
    from elastic_lib.data.pipeline import make_pipeline

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(backend.BackendError, match="KERAS_BACKEND=tensorflow.*runs Keras on jax"):
        make_pipeline(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2), 8, lambda t: t, 2)
    for field, value in (("strategy", "mirrored"), ("input_pipeline", "tf_data")):
        with pytest.raises(ConfigError, match=f"{field}.*needs the TensorFlow backend"):
            RunConfig(dataset="digits", **{field: value}).validate()
    RunConfig(dataset="digits", input_pipeline="pydataset").validate()  # the neutral path is fine anywhere
    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    with pytest.raises(backend.BackendError, match="tensorflow, jax, torch"):
        backend.name()


def test_backend_label_and_version_without_importing_it():
    name = backend.name()
    assert name in backend.BACKENDS and backend.version() != "not installed"
    assert (
        backend.label()
        == {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[name] + " " + backend.version()
    )
    assert backend.version(name) == __import__(name).__version__


# ---------------------------------------------------------------- every backend
def test_counts_match_the_registry_golden_file():
    """Every registry backbone with every exit, at its minimum size: params, kernel MACs, MACs, FLOPs
    and depths per output, exactly as in the golden file made on TensorFlow
    (tests/golden_complexity.py); ./run_tests.sh checks it on TensorFlow and on JAX (and PyTorch)."""
    from golden_complexity import GOLDEN, MIN_SIZE, registry_counts

    golden = json.loads(GOLDEN.read_text())[MIN_SIZE]  # the file's per-output min-size section
    mine = registry_counts()
    assert sorted(mine) == sorted(golden) and len(mine) >= 15, (
        "python tests/golden_complexity.py after a registry change"
    )
    for name in mine:
        a, b = pd.DataFrame(mine[name]), pd.DataFrame(golden[name])
        assert sorted(a.columns) == sorted(b.columns), name
        pd.testing.assert_frame_equal(
            a[sorted(a.columns)], b[sorted(b.columns)], check_exact=True, obj=f"{name} on {backend.name()}"
        )


@pytest.mark.slow
def test_each_phase_trains_what_it_should_on_this_backend():
    """One epoch of phase 1 moves the heads only (backbone frozen, BatchNorm statistics kept), one
    of phase 2 the backbone too; the history is finite (what ./run_tests.sh checks on PyTorch)."""
    from elastic_lib.data.pipeline import make_input
    from elastic_lib.models.exits import build_elastic_model, is_head_layer
    from elastic_lib.runtime import set_determinism
    from elastic_lib.train.training import fit_two_phase

    s = load_dataset("digits", limit_per_class=10)  # 80 train, 20 validation images
    pre = preprocess_input("tiny_cnn")
    set_determinism(0)
    model = build_elastic_model("tiny_cnn", 10, 16, exits=["block2_out"])

    def train(phase, first, epochs):
        plan = EpochPlan(len(s.y_train), seed=0, phase=phase)
        return make_input("auto", s.x_train, s.y_train, 16, pre, 16, 2, plan, epochs, first), num_batches(80, 16)

    def snapshot():
        return {l.name: [np.array(w) for w in l.get_weights()] for l in model.layers if l.get_weights()}

    def moved(a, b):
        return {n for n in a if any(not np.array_equal(x, y) for x, y in zip(a[n], b[n]))}

    val = make_input("auto", s.x_val, s.y_val, 16, pre, 16, 2)
    before = snapshot()
    h1 = fit_two_phase(model, train, val, RunConfig(phase1_epochs=1, phase2_epochs=0))
    after1 = snapshot()
    assert moved(before, after1) == {n for n in before if is_head_layer(model.get_layer(n))}
    h2 = fit_two_phase(model, train, val, RunConfig(phase1_epochs=0, phase2_epochs=1))
    assert {"block1_conv", "block3_conv", "block3_bn"} <= moved(after1, snapshot())
    assert np.isfinite(pd.concat([h1, h2])[["loss", "val_loss"]].to_numpy()).all()


SMOKE_RUN = "mobilenet_0.75__digits__elastic"
TRAIN_ON = """
import sys, yaml
from elastic_lib.experiment import run
run(yaml.safe_load(open(sys.argv[1])))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "profile, run", [("tiny", "tiny_cnn__digits__elastic"), pytest.param("smoke", SMOKE_RUN, marks=pytest.mark.deep)]
)
def test_training_on_jax_matches_tensorflow_within_the_measured_tolerance(tmp_path, profile, run):
    """A committed run (TensorFlow), trained again on JAX from the same profile: the same outputs and
    counts exactly, and the final output's test error within the cross-CPU tolerance measured for it
    (``results/<profile>/reproducibility/tolerances.csv``, the portable-tests measure): the tiny run
    (seconds) here, the smoke run in the deep tier. The exits' errors are reported, not asserted:
    the shallow exits move more across backends than across CPUs."""
    if backend.name() == "jax":
        pytest.skip("a comparison with TensorFlow's numbers: the TensorFlow session runs it")
    import yaml

    from elastic_lib.control.profiles import load_profile
    from elastic_lib.control.reproducibility import compare_run, load_tolerances

    python = other_python("jax")
    cfg = next(c for c in load_profile(profile).runs if c.run_id() == run)
    params = {**cfg.experiment_params(), "output_dir": str(tmp_path / run), "latency_repeats": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "KERAS_BACKEND": "jax", "ELASTIC_BACKEND": "jax", "PYTHONPATH": ROOT}
    proc = subprocess.run(
        [python, "-c", TRAIN_ON, str(tmp_path / "params.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tol = load_tolerances(os.path.join(ROOT, "results", profile, "reproducibility", "tolerances.csv"))
    checks = compare_run(os.path.join(ROOT, "results", profile, run), str(tmp_path / run), tol)
    exact = checks[checks["check"] != "tolerance"]
    assert exact["ok"].all(), exact[~exact["ok"]].to_string()
    final = checks[(checks["output"] == "final") & (checks["column"] == "top1_err_pct")]
    report = checks[checks["column"] == "top1_err_pct"][["output", "reference", "value", "tolerance", "ok"]]
    assert len(final) == 1 and final["ok"].all(), report.to_string()


# ---------------------------------------------------------------- resizing inside the model
def _pair(backbone: str, size: int, source: int):
    """The same elastic model (same weights) built for host resizing and for resize_in_model."""
    import keras

    from elastic_lib.models.exits import build_elastic_model

    keras.utils.set_random_seed(0)
    host = build_elastic_model(backbone, 10, size)
    inside = build_elastic_model(backbone, 10, size, source_size=source)
    inside.set_weights(host.get_weights())
    return host, inside


@pytest.mark.parametrize(
    "backbone",
    [
        "mobilenet_0.75",  # the other backends: one backbone is the resize op's check
        pytest.param("resnet50_legacy", marks=pytest.mark.tensorflow_leg),
        pytest.param("inception_v4", marks=pytest.mark.tensorflow_leg),
    ],
)
def test_resize_in_model_is_the_host_resize_moved_into_the_model(backbone):
    """One Resizing layer first, named; the rest of the graph (names, weights, costs) unchanged;
    the outputs on 32-px images are the host-resized model's."""
    import keras

    from elastic_lib.data.pipeline import resize
    from elastic_lib.models import complexity

    size = max(get_backbone(backbone).min_size, 48)
    host, inside = _pair(backbone, size, 32)
    assert tuple(inside.inputs[0].shape) == (None, 32, 32, 3)
    assert [l.name for l in inside.layers][1] == "resize_in_model"
    assert [l.name for l in inside.layers[2:]] == [l.name for l in host.layers[1:]]
    pd.testing.assert_frame_equal(complexity.complexity_frame(inside), complexity.complexity_frame(host))
    x = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    for a, b in zip(host.predict(resize(x, size), verbose=0), inside.predict(x, verbose=0)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    assert keras.ops.convert_to_numpy(inside.get_layer("resize_in_model")(x)).shape == (3, size, size, 3)


def test_an_experiment_with_resize_in_model_ships_source_images(tmp_path):
    """The run's input carries 8-px digits (preprocessed on the host, which commutes with the
    bilinear resize) and its model's predictions are those of the host-resized run."""
    from elastic_lib.experiment import Experiment

    runs = []
    for inside in (False, True):
        exp = Experiment({"limit_per_class": 5, "resize_in_model": inside, "output_dir": str(tmp_path / str(inside))})
        exp.load_data()
        exp.build_model()
        runs.append(exp)
    runs[1].model.set_weights(runs[0].model.get_weights())
    (xh, _), (xi, _) = (next(iter(r.pipeline("test"))) for r in runs)
    assert np.shape(xh)[1:] == (32, 32, 3) and np.shape(xi)[1:] == (8, 8, 3)
    for a, b in zip(runs[0].model.predict(xh, verbose=0), runs[1].model.predict(xi, verbose=0)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(runs[1].costs, runs[0].costs)
