"""Loss weights, the two-phase recipe (what is frozen when), history columns, determinism and
divergence. Training runs tiny_cnn on 60 digits at 16x16: a few steps per phase."""

import numpy as np
import pandas as pd
import pytest

from elastic_lib.control.config import RunConfig
from elastic_lib.data.arrays import load_dataset
from elastic_lib.data.pipeline import EpochPlan, make_input, num_batches
from elastic_lib.models.backbones import preprocess_input
from elastic_lib.models.exits import build_elastic_model, short_output_names
from elastic_lib.runtime import set_determinism
from elastic_lib.train.training import TrainingDiverged, fit_two_phase, loss_weights

pytestmark = pytest.mark.backend  # ./run_tests.sh runs this file on every backend

BACKBONE, SIZE, BATCH = "tiny_cnn", 16, 16


# ---------------------------------------------------------------- loss weights
@pytest.mark.parametrize("n", [1, 2, 3, 5, 14])
def test_loss_weight_schemes(n):
    L = n  # number of outputs; exits have depth d = 1 .. L-1, the final head weight 1
    assert loss_weights(n, "uniform") == [1.0] * n
    assert loss_weights(n) == [1.0] * n
    assert loss_weights(n, "depth") == pytest.approx([1 / (L - d) for d in range(1, L)] + [1.0])
    assert loss_weights(n, "linear") == pytest.approx([d / (L - 1) for d in range(1, L)] + [1.0])


def test_loss_weights_examples():
    assert loss_weights(4, "depth") == pytest.approx([1 / 3, 1 / 2, 1.0, 1.0])
    assert loss_weights(4, "linear") == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_unknown_loss_weight_scheme():
    with pytest.raises(ValueError) as err:
        loss_weights(3, "exponential")
    for valid in ("uniform", "depth", "linear"):
        assert valid in str(err.value)


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit_per_class=6)  # 48 train / 12 val


def pipelines(model, s, x_train=None, shuffle=False):
    pre = preprocess_input(BACKBONE)
    n = len(model.outputs)
    x_train = s.x_train if x_train is None else x_train
    val = make_input("auto", s.x_val, s.y_val, SIZE, pre, BATCH, n)
    if not shuffle:
        return make_input("auto", x_train, s.y_train, SIZE, pre, BATCH, n), val

    def train(phase, first_epoch, epochs):  # what Experiment.train_input gives fit_two_phase
        plan = EpochPlan(len(x_train), seed=0, phase=phase)
        return (
            make_input("auto", x_train, s.y_train, SIZE, pre, BATCH, n, plan, epochs, first_epoch),
            num_batches(len(x_train), BATCH),
        )

    return train, val


def snapshot(model):
    return {l.name: [np.array(w) for w in l.get_weights()] for l in model.layers if l.get_weights()}


def is_head(name):
    return name.startswith(("exit_", "final_"))


def changed(before, after, name):
    return any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))


# ---------------------------------------------------------------- two phases
@pytest.mark.slow
def test_two_phase_training(digits):
    set_determinism(0)
    model = build_elastic_model(BACKBONE, 10, SIZE, exits="all")
    train, val = pipelines(model, digits)
    w0 = snapshot(model)
    backbone = [n for n in w0 if not is_head(n)]
    heads = [n for n in w0 if is_head(n)]
    assert len(heads) == 4 and len(backbone) == 6  # 3 exits + final; 3 x (conv, BatchNorm)

    # phase 1 only: heads train, the backbone (weights and BatchNorm statistics) stays put
    h1 = fit_two_phase(model, train, val, RunConfig(phase1_epochs=1, phase2_epochs=0, learning_rate=0.01))
    w1 = snapshot(model)
    assert [n for n in backbone if changed(w0, w1, n)] == []
    assert [n for n in heads if not changed(w0, w1, n)] == []

    # phase 2 only: everything trains
    h2 = fit_two_phase(model, train, val, RunConfig(phase1_epochs=0, phase2_epochs=1, phase2_learning_rate=0.01))
    w2 = snapshot(model)
    moved = [n for n in backbone if changed(w1, w2, n)]
    assert "block1_conv" in moved and "block3_bn" in moved
    assert len(moved) == len(backbone)

    # history: one loss / accuracy column per output, train and validation, short names
    short = short_output_names(model)
    assert short == ["exit01", "exit02", "exit03", "final"]
    for h, phase in ((h1, 1), (h2, 2)):
        assert len(h) == 1 and h.loc[0, "phase"] == phase and h.loc[0, "epoch"] == 1
        for s in short:
            for col in (f"{s}_loss", f"{s}_accuracy", f"val_{s}_loss", f"val_{s}_accuracy"):
                assert col in h.columns, col
        assert not [c for c in h.columns if "softmax" in c or c.startswith(("exit_", "val_exit_"))]
        # uniform weights: the total loss is the plain sum of the per-output losses
        assert h.loc[0, "loss"] == pytest.approx(sum(h.loc[0, f"{s}_loss"] for s in short), rel=1e-4)
        assert h.loc[0, "val_loss"] == pytest.approx(sum(h.loc[0, f"val_{s}_loss"] for s in short), rel=1e-4)
    assert all(model.get_layer(n).trainable for n in backbone)  # left fully trainable


def _tiny_run(digits, loss_scheme="depth"):
    """Fresh seeded model with 2 exits; one all-layers epoch (dropout, shuffling and init all
    draw random numbers)."""
    set_determinism(0)
    model = build_elastic_model(BACKBONE, 10, SIZE, exits=["block1_out", "block2_out"])
    train, val = pipelines(model, digits, shuffle=True)
    return fit_two_phase(
        model,
        train,
        val,
        RunConfig(phase1_epochs=0, phase2_epochs=1, phase2_learning_rate=0.01, loss_weights=loss_scheme),
    )


@pytest.mark.slow
def test_training_is_deterministic(digits):
    a, b = _tiny_run(digits), _tiny_run(digits)
    assert list(a["phase"]) == [2] and list(a["epoch"]) == [1]
    loss_cols = [c for c in a.columns if c.endswith("loss")]
    assert len(loss_cols) == 8
    assert np.isfinite(a[loss_cols].to_numpy()).all()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # depth weights for 3 outputs: 1/(3-1), 1/(3-2), final 1
    expected = 0.5 * a.loc[0, "exit01_loss"] + 1.0 * a.loc[0, "exit02_loss"] + 1.0 * a.loc[0, "final_loss"]
    assert a.loc[0, "loss"] == pytest.approx(expected, rel=1e-4)


def _fit_baseline(digits, lr, x_train=None, phase=2):
    set_determinism(0)
    model = build_elastic_model(BACKBONE, 10, SIZE, exits="none")
    train, val = pipelines(model, digits, x_train=x_train)
    cfg = RunConfig(
        phase1_epochs=int(phase == 1), phase2_epochs=int(phase == 2), learning_rate=lr, phase2_learning_rate=lr
    )
    return fit_two_phase(model, train, val, cfg)


@pytest.mark.slow
def test_overflowing_learning_rate_diverges(digits):
    with pytest.raises(TrainingDiverged, match="learning rate"):
        _fit_baseline(digits, 1e30)


@pytest.mark.slow
def test_absurd_learning_rate_diverges(digits):
    with pytest.raises(TrainingDiverged, match="learning rate"):
        _fit_baseline(digits, 1e12)


@pytest.mark.slow
def test_nan_inputs_diverge(digits):
    x = digits.x_train.astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingDiverged, match="phase 1"):
        _fit_baseline(digits, 0.01, x_train=x, phase=1)


@pytest.mark.slow
@pytest.mark.requires_tensorflow
def test_experiment_mirrored_strategy_trains(tmp_path):
    from elastic_lib.experiment import Experiment

    exp = Experiment(
        {
            "backbone": BACKBONE,
            "dataset": "digits",
            "image_size": SIZE,
            "limit_per_class": 6,
            "phase1_epochs": 1,
            "phase2_epochs": 0,
            "batch_size": BATCH,
            "strategy": "mirrored",
            "output_dir": str(tmp_path / "run"),
        }
    )
    exp.setup()
    exp.load_data()
    before = [np.array(w) for w in exp.build_model().get_weights()]
    history = exp.train()
    import tensorflow as tf

    assert isinstance(exp.strategy(), tf.distribute.MirroredStrategy)
    # the model's variables live in the strategy (built under its scope), and training moved them
    assert all(exp.strategy().extended.variable_created_in_scope(v.value) for v in exp.model.weights)
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
    after = exp.model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
