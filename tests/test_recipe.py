"""The original code's recipe as run parameters (yipersevere/Elastic @ cd9c5bc, Keras 2.1.5):
frozen BatchNorm semantics, per-phase momentum, callback options, inception preprocessing, the
paper and clean protocols, and resumable training. Tiny digits runs (a few steps each)."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from elastic_lib import experiment
from elastic_lib.analysis import protocols
from elastic_lib.control.config import RunConfig
from elastic_lib.control.paths import ROOT
from elastic_lib.control.profiles import load_profile
from elastic_lib.data.arrays import load_dataset
from elastic_lib.data.pipeline import make_pipeline
from elastic_lib.models.backbones import preprocess_input
from elastic_lib.models.exits import build_elastic_model
from elastic_lib.runtime import set_determinism
from elastic_lib.train import training

BACKBONE, SIZE, BATCH = "tiny_cnn", 16, 16


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit_per_class=6)  # 48 train / 12 val


def _bn_state(model):
    return {
        l.name: [np.array(w) for w in l.get_weights()]
        for l in model.layers
        if isinstance(l, keras.layers.BatchNormalization)
    }


@pytest.mark.slow
@pytest.mark.requires_tensorflow  # make_pipeline: tf.data
@pytest.mark.parametrize("frozen_bn", ["inference", "batch_stats"])
def test_phase1_frozen_batchnorm_semantics(digits, frozen_bn):
    """Phase 1 never changes a backbone BatchNorm (moving statistics, gamma, beta), in both
    modes; batch_stats (Keras 2.1.5) normalises with the batch's statistics while training,
    inference (Keras 3) with the moving ones."""
    set_determinism(0)
    model = build_elastic_model(BACKBONE, 10, SIZE, exits="none", dropout=0.0)
    pre = preprocess_input(BACKBONE)
    train = make_pipeline(digits.x_train, digits.y_train, SIZE, pre, BATCH, 1)
    x = next(iter(train))[0]
    before = _bn_state(model)
    training.set_trainable(model, backbone=False, frozen_bn=frozen_bn)
    # what phase 1's forward pass computes, against inference
    same = np.allclose(model(x, training=True), model(x, training=False), atol=1e-6)
    assert same == (frozen_bn == "inference")
    # only the head's kernel and bias are trained
    assert [w.path for w in model.trainable_weights] == ["final_softmax/kernel", "final_softmax/bias"]
    training.set_trainable(model, backbone=True)
    h = training.fit_two_phase(model, train, train, RunConfig(phase1_epochs=1, phase2_epochs=0, frozen_bn=frozen_bn))
    assert len(h) == 1
    after = _bn_state(model)
    assert all(np.array_equal(a, b) for k in before for a, b in zip(before[k], after[k]))
    # afterwards the layers are ordinary trainable BatchNorms again, momentum as it was
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(l.trainable and l.gamma.trainable and l.momentum == 0.99 for l in bns)


@pytest.mark.slow
@pytest.mark.requires_tensorflow  # make_pipeline: tf.data
def test_phase_momenta_and_callback_options(digits):
    set_determinism(0)
    model = build_elastic_model(BACKBONE, 10, SIZE, exits="none")
    pre = preprocess_input(BACKBONE)
    ds = make_pipeline(digits.x_train, digits.y_train, SIZE, pre, BATCH, 1)
    cfg = RunConfig(
        phase1_epochs=1,
        phase2_epochs=1,
        momentum=0.9,
        phase2_momentum=0.0,
        early_stopping_min_delta=1e-4,
        reduce_lr_cooldown=1,
    )
    training.fit_two_phase(model, ds, ds, cfg)
    assert float(model.optimizer.momentum) == 0.0  # phase 2 recompiled with plain SGD, as the original
    rlr, es = training._callbacks(cfg)
    assert (rlr.cooldown, rlr.factor, rlr.patience, rlr.min_lr) == (1, 0.1, 5, 1e-5)
    assert es.min_delta == 1e-4 and es.patience == 10 and es.restore_best_weights


def test_inception_preprocessing_for_every_backbone(tmp_path):
    exp = experiment.Experiment({"backbone": "vgg16", "preprocess": "inception", "output_dir": str(tmp_path)})
    x = np.array([[[[0.0, 127.5, 255.0]]]], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(exp.preprocess(x)), [[[[-1.0, 0.0, 1.0]]]])  # scaled to [-1, 1]
    native = experiment.Experiment({"backbone": "vgg16", "output_dir": str(tmp_path)}).preprocess(x.copy())
    assert not np.allclose(np.asarray(native), [[[[-1.0, 0.0, 1.0]]]])  # caffe-style: BGR, mean subtracted


def test_paper_profile_is_the_original_recipe():
    """Values read from the original code (elastic/main.py, opts.py, ElasticNN.py at cd9c5bc)."""
    runs = load_profile("paper").runs
    c = runs[0]
    assert (c.image_size, c.weights, c.preprocess, c.final_head, c.dropout) == (
        224,
        "imagenet",
        "inception",
        "flatten",
        0.2,
    )
    assert (c.learning_rate, c.momentum, c.phase2_learning_rate, c.phase2_momentum) == (1e-3, 0.9, 1e-3, 0.0)
    assert (c.reduce_lr_factor, c.reduce_lr_patience, c.reduce_lr_cooldown, c.min_lr) == (0.1, 5, 1, 1e-5)
    assert (c.early_stopping_patience, c.early_stopping_min_delta) == (10, 1e-4)
    assert (c.frozen_bn, c.val_fraction, c.batch_size, c.augment) == ("batch_stats", 0.2, 32, False)
    assert {r.backbone for r in runs} == {
        "mobilenet_0.75",
        "inception_v3",
        "resnet50_legacy",
        "densenet121",
        "densenet169",
        "vgg16",
    }
    assert len(runs) == 24
    d169 = [r for r in runs if r.backbone == "densenet169"][0]
    assert d169.compare_depth_of == "densenet121" and d169.extra_exits == "conv5_block8_concat"


def test_paper_dryrun_is_the_paper_profile_at_a_small_scale():
    paper, dry = load_profile("paper").runs, load_profile("paper-dryrun").runs
    scale = {
        "weights",
        "limit_per_class",
        "test_limit_per_class",
        "phase1_epochs",
        "phase2_epochs",
        "latency_repeats",
        "latency_images",
        "output_dir",
    }
    assert [r.run_id() for r in paper] == [r.run_id() for r in dry]
    for p, d in zip(paper, dry):
        differ = {k for k, v in p.to_dict().items() if d.to_dict()[k] != v}
        assert differ <= scale, differ
    assert load_profile("paper").requires_gpu and not load_profile("paper-dryrun").requires_gpu


def test_densenet169_equal_depth_tap_is_densenet121_deep():
    """DenseNet-121 counts 121 weighted layers (1 + 2x(6+12+24+16) + 3 transitions + the classifier);
    in DenseNet-169 (blocks 6, 12, 32, 32) 1 + 2x(6+12+32) + 3 = 104 layers reach block 5, so its
    8th layer's concat is 120 deep, and an exit there (+ its Dense) is 121 deep."""
    from elastic_lib.models import complexity

    model = build_elastic_model("densenet169", 10, 32, exits="all", extra_exits=["conv5_block8_concat"])
    costs = complexity.complexity_frame(model).set_index("tap_layer")
    assert int(costs.loc["conv5_block8_concat", "depth_layers"]) == 121
    other = build_elastic_model("densenet121", 10, 32, exits="none")
    assert int(complexity.complexity_frame(other)["depth_layers"].iloc[-1]) == 121


# ---------------------------------------------------------------- protocols
def test_protocols_by_hand():
    # 2 exits + final; phase 2 ran 3 epochs (epochs 2..4 of the run)
    hist = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "phase": [1, 2, 2, 2],
            "phase_epoch": [1, 1, 2, 3],
            "test_exit01_top1_err_pct": [np.nan, 50.0, 40.0, 45.0],
            "test_exit02_top1_err_pct": [np.nan, 30.0, 20.0, 25.0],
            "test_final_top1_err_pct": [np.nan, 28.0, 22.0, 21.0],
        }
    )
    th = protocols.test_history(hist)
    assert len(th) == 9 and list(th["output"][:3]) == ["exit01", "exit02", "final"]
    mins = protocols.per_output_min(th).set_index("output")
    assert mins.loc["exit01"].tolist() == [40.0, 3] and mins.loc["final"].tolist() == [21.0, 4]
    exits = pd.DataFrame(
        {
            "output": ["exit01", "exit02", "final"],
            "top1_err_pct": [44.0, 26.0, 23.0],
            "val_top1_err_pct": [41.0, 24.0, 25.0],
        }
    )
    r = protocols.reported(exits, th)
    # paper: min over epochs of the last exit (20 at epoch 3) vs the final head (21): 20
    assert (r["paper_protocol_top1_err_pct"], r["paper_protocol_output"], r["paper_protocol_epoch"]) == (
        20.0,
        "exit02",
        3,
    )
    # clean: of exit02 and final, exit02 has the lower validation error; its test error is 26
    assert (r["clean_protocol_top1_err_pct"], r["clean_protocol_output"]) == (26.0, "exit02")
    # a baseline: the final head alone
    b = protocols.reported(exits.iloc[[2]], th[th["output"] == "final"])
    assert (b["paper_protocol_top1_err_pct"], b["clean_protocol_top1_err_pct"]) == (21.0, 23.0)


# ---------------------------------------------------------------- resume
RESUME = dict(
    backbone=BACKBONE,
    dataset="digits",
    image_size=SIZE,
    limit_per_class=8,
    test_limit_per_class=3,
    phase1_epochs=2,
    phase2_epochs=4,
    batch_size=BATCH,
    latency_repeats=0,
    reduce_lr_patience=1,
)


@pytest.mark.slow
@pytest.mark.backend
def test_an_interrupted_run_resumes_at_its_last_finished_epoch(tmp_path, monkeypatch):
    """Killed at the end of phase-2 epoch 3 (before that epoch's checkpoint), the rerun trains
    phase-2 epochs 3 and 4 only; phase 1 is not redone; history.csv is continuous."""
    out = str(tmp_path / "run")
    orig = training.TestEveryEpoch.on_epoch_end
    calls = {"n": 0}

    def killed_at_epoch_3(self, epoch, logs=None):
        orig(self, epoch, logs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated SIGTERM")

    monkeypatch.setattr(training.TestEveryEpoch, "on_epoch_end", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        experiment.run({**RESUME, "output_dir": out})
    state = json.load(open(f"{out}/resume/phase2/state.json"))
    assert state["epoch"] == 2 and not (tmp_path / "run" / "DONE").exists()
    kept = pd.read_csv(f"{out}/resume/phase2/history.csv")

    monkeypatch.setattr(training.TestEveryEpoch, "on_epoch_end", orig)
    begun = []
    orig_begin = training.ResumeState.on_epoch_begin
    monkeypatch.setattr(
        training.ResumeState,
        "on_epoch_begin",
        lambda self, epoch, logs=None: (begun.append((self.phase, epoch + 1)), orig_begin(self, epoch, logs)),
    )
    exp = experiment.run({**RESUME, "output_dir": out})
    assert begun == [(2, 3), (2, 4)]  # nothing of phase 1, nothing before phase-2 epoch 3
    assert exp.resumed == "phase1 finished; phase2 at epoch 2"
    hist = pd.read_csv(f"{out}/history.csv")
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5, 6] and list(hist["phase"]) == [1, 1, 2, 2, 2, 2]
    assert list(hist["phase_epoch"]) == [1, 2, 1, 2, 3, 4]
    # the epochs trained before the interruption are the ones kept, not retrained
    np.testing.assert_allclose(hist[hist["phase"] == 2]["loss"].to_numpy()[:2], kept["loss"].to_numpy(), rtol=1e-5)
    assert (
        len(pd.read_csv(f"{out}/test_history.csv")) == 4 * 4
    )  # every output (3 exits, final) after each phase-2 epoch
    summary = pd.read_csv(f"{out}/summary.csv", keep_default_na=False).iloc[0]
    assert summary["resumed_from"] == "phase1 finished; phase2 at epoch 2" and summary["epochs_run"] == 6
    assert not (tmp_path / "run" / "resume").exists() and (tmp_path / "run" / "DONE").exists()


@pytest.mark.slow
@pytest.mark.backend
def test_a_run_interrupted_in_phase_1_trains_every_phase_2_epoch(tmp_path, monkeypatch):
    """Killed after phase-1 epoch 2 was committed, the rerun trains phase-1 epoch 3 and then all of
    phase 2 from its first epoch (Keras keeps a resumed ``_initial_epoch`` on the model; phase 2
    must not inherit it: CI once saw phase 2 run zero epochs)."""
    out = str(tmp_path / "run")
    cfg = {**RESUME, "phase1_epochs": 3, "phase2_epochs": 2, "output_dir": out}
    orig = training.ResumeState.on_epoch_end

    def killed_after_phase1_epoch_2(self, epoch, logs=None):
        orig(self, epoch, logs)
        if self.phase == 1 and epoch + 1 == 2:
            raise KeyboardInterrupt("simulated SIGTERM")

    monkeypatch.setattr(training.ResumeState, "on_epoch_end", killed_after_phase1_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg)
    assert json.load(open(f"{out}/resume/phase1/state.json"))["epoch"] == 2

    monkeypatch.setattr(training.ResumeState, "on_epoch_end", orig)
    begun = []
    orig_begin = training.ResumeState.on_epoch_begin
    monkeypatch.setattr(
        training.ResumeState,
        "on_epoch_begin",
        lambda self, epoch, logs=None: (begun.append((self.phase, epoch + 1)), orig_begin(self, epoch, logs)),
    )
    experiment.run(cfg)
    assert begun == [(1, 3), (2, 1), (2, 2)]
    hist = pd.read_csv(f"{out}/history.csv")
    assert list(hist["phase"]) == [1, 1, 1, 2, 2] and list(hist["phase_epoch"]) == [1, 2, 3, 1, 2]


@pytest.mark.backend
def test_resume_state_of_other_parameters_is_discarded(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    (tmp_path / "run" / "resume").mkdir(parents=True)
    (tmp_path / "run" / "resume" / "parameters.json").write_text('{"seed": 99}')
    (tmp_path / "run" / "resume" / "phase1_history.csv").write_text("epoch\n1\n")
    exp = experiment.Experiment({**RESUME, "phase1_epochs": 1, "phase2_epochs": 0, "output_dir": out})
    exp.setup()
    assert exp.resumed == "" and not (tmp_path / "run" / "resume" / "phase1_history.csv").exists()


@pytest.mark.slow
def test_sigterm_in_phase_2_then_rerun_goes_on_from_there(tmp_path):
    """The real driver (./run_all.sh): SIGTERM while a run is in phase 2; the rerun does not redo
    earlier epochs (its notebook says where it resumed), history.csv is continuous, and while
    the run was in flight the driver printed its phase, epoch, validation accuracy and ETA."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    root = tmp_path / "results"
    prof = tmp_path / "resume.yaml"
    # 320 training images: phase-2 epochs long enough (a few tenths of a second) to interrupt one
    defaults = {k: v for k, v in RESUME.items() if k != "backbone"} | {
        "phase2_epochs": 30,
        "limit_per_class": 40,
        "early_stopping_patience": 30,
    }
    prof.write_text(yaml.safe_dump({"defaults": defaults, "grid": {"backbone": [BACKBONE], "variant": ["elastic"]}}))
    run_dir = root / "resume" / f"{BACKBONE}__digits__elastic"
    cmd = [
        sys.executable,
        "-m",
        "elastic_lib.control.batch",
        "--profile",
        str(prof),
        "--results-root",
        str(root),
        "--no-aggregate",
    ]
    env = {**os.environ, "ELASTIC_PROGRESS_S": "0.5"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env, cwd=ROOT
    )
    state = run_dir / "resume" / "phase2" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.kill(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert "interrupted by signal 15" in out, out[-3000:]
    assert "phase 2 epoch " in out and "val acc " in out and "phase ETA " in out, out[-3000:]
    # the notebook kernel outlives its killed driver by up to a second (ipykernel's parent poller) and may
    # commit one more epoch: read the resume point once the state has stopped changing
    k, still = json.loads(state.read_text())["epoch"], time.monotonic()
    while time.monotonic() - still < 3 and time.monotonic() < deadline + 60:
        time.sleep(0.2)
        now = json.loads(state.read_text())["epoch"]
        if now != k:
            k, still = now, time.monotonic()
    assert 2 <= k < 30 and not (run_dir / "DONE").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    nb = json.loads((run_dir / "notebook.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert f"resuming an interrupted run: phase1 finished; phase2 at epoch {k}" in printed
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist["epoch"]) == list(range(1, len(hist) + 1))
    assert list(hist[hist["phase"] == 2]["phase_epoch"]) == list(range(1, len(hist) - 1))
    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False).iloc[0]
    assert summary["resumed_from"] == f"phase1 finished; phase2 at epoch {k}"
