"""The GPU path, tested on a CPU (issue: the paper on a GPU). What only a GPU shows is injected:
the ops a device lacks a deterministic kernel for (``ELASTIC_FAKE_NONDETERMINISTIC``), the GPUs
``nvidia-smi`` lists (a fake one on PATH), several devices (JAX's host-platform device count).

- determinism strict | auto | off: strict stops before any data is read, naming the ops; auto
  trains and records them; off switches nothing; a run recorded before the setting existed stays
  current;
- precision mixed_bfloat16 and true float32 (allow_tf32 recorded);
- data_parallel over two devices (JAX), ``--jobs`` giving each job its own GPU, ``--weights-dir``;
- the input path: worker threads give the same batches in the same order, the divergence guard
  reads the loss only every few batches, evaluation reads a split once, resize_in_model at the
  paper's 224 px is the host resize within float rounding.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny import BACKBONE, ROOT, TINY, run_batch, write_profile

from elastic_lib.control import batch, config, environment, provenance
from elastic_lib.control.config import RunConfig

FAKE_SMI = (
    '#!/bin/sh\n[ "$1" = -L ] && printf \'GPU 0: NVIDIA H200 (UUID: GPU-0-fake)\\n'
    "GPU 1: NVIDIA H200 (UUID: GPU-1-fake)\\n'\n"
)


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return bin_dir


# ---------------------------------------------------------------- determinism
def test_determinism_plan_on_a_cpu_and_with_a_gpus_gaps(monkeypatch):
    monkeypatch.delenv(environment.FAKE_NONDETERMINISTIC, raising=False)
    monkeypatch.setattr(environment, "visible_gpus", list)
    assert environment.plan_determinism("strict") == {
        "mode": "strict",
        "strict_kernels": True,
        "nondeterministic_ops": [],
    }
    assert environment.plan_determinism("auto")["strict_kernels"]
    assert not environment.plan_determinism("off")["strict_kernels"]
    monkeypatch.setenv(environment.FAKE_NONDETERMINISTIC, "max_pool_grad")
    with pytest.raises(environment.DeterminismError, match=r"max_pool_grad.*determinism='auto'"):
        environment.plan_determinism("strict")
    auto = environment.plan_determinism("auto")
    assert auto == {"mode": "auto", "strict_kernels": False, "nondeterministic_ops": ["max_pool_grad"]}
    monkeypatch.setenv(environment.FAKE_NONDETERMINISTIC, "max_pool_gradient")
    with pytest.raises(ValueError, match="unknown ops"):
        environment.plan_determinism("auto")
    with pytest.raises(ValueError, match="valid: strict, auto, off"):
        environment.plan_determinism("sometimes")


def test_the_probe_runs_only_where_a_gpu_is(monkeypatch, two_gpus):
    """With a GPU listed, the probe runs in a fresh process under the strict switches (here on the
    CPU, where every op passes); without one, no process is started."""
    monkeypatch.delenv(environment.FAKE_NONDETERMINISTIC, raising=False)
    calls = []
    real = subprocess.run
    monkeypatch.setattr(environment.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real(cmd, **kw))
    assert environment.nondeterministic_ops() == []
    assert any("probe_determinism" in " ".join(map(str, c)) for c in calls)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert environment.visible_gpus() == ["GPU 1: NVIDIA H200 (UUID: GPU-1-fake)"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    calls.clear()
    assert environment.nondeterministic_ops() == [] and all("probe" not in " ".join(map(str, c)) for c in calls)


def test_probe_finds_every_op_deterministic_on_this_cpu():
    from elastic_lib.runtime import probe_determinism

    assert probe_determinism() == []


def _tiny_run(tmp_path, name, env_extra=None, **params):
    """One tiny run through the real driver; (completed process, its run directory)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    profile = write_profile(tmp_path, name, grid={"backbone": [BACKBONE], "variant": ["elastic"]}, defaults=params)
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "elastic_lib.control.batch", "--profile", profile, "--results-root",
         str(tmp_path / "results"), "--figures-root", str(tmp_path / "figures"), "--no-aggregate"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env=env,
    )  # fmt: skip
    return proc, tmp_path / "results" / name / f"{BACKBONE}__digits__elastic"


def test_strict_stops_early_and_auto_trains_recording_the_ops(tmp_path):
    fake = {environment.FAKE_NONDETERMINISTIC: "max_pool_grad,bilinear_resize_grad"}
    proc, run = _tiny_run(tmp_path / "s", "strict", fake, determinism="strict")
    assert proc.returncode == 1 and "determinism='auto'" in proc.stdout + proc.stderr
    assert not (run / "exits.csv").exists() and not (run / "history.csv").exists()  # stopped before training
    proc, run = _tiny_run(tmp_path / "a", "auto", fake, determinism="auto")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = yaml.safe_load((run / "params.yaml").read_text())
    assert doc["parameters"]["determinism"] == "auto"
    assert doc["determinism"]["nondeterministic_ops"] == ["max_pool_grad", "bilinear_resize_grad"]
    assert doc["determinism"].get("tf_op_determinism", False) is False
    assert doc["environment"]["machine"]["float32_matmul"] == "float32"


def test_a_run_recorded_before_the_new_settings_stays_current(tmp_path):
    """determinism and allow_tf32 came after runs were recorded: a recorded run without them is
    read as determinism=strict, allow_tf32=False (``config.LEGACY``, which also holds later
    additions such as exit_analysis); other values are a change."""
    legacy = {k: config.LEGACY[k] for k in ("determinism", "allow_tf32")}
    assert legacy == {"determinism": "strict", "allow_tf32": False}
    now = {**RunConfig().experiment_params(), **config.LEGACY}  # a run at the legacy values
    then = {k: v for k, v in now.items() if k not in config.LEGACY}
    assert config.as_recorded(now, then) == then
    assert config.as_recorded({**now, "determinism": "auto"}, then) == {**then, "determinism": "auto"}
    run = Path(ROOT) / "results" / "tiny" / "tiny_cnn__digits__elastic"
    recorded = yaml.safe_load((run / "params.yaml").read_text())["parameters"]
    assert "determinism" not in recorded  # made before the setting: still current
    cfg = RunConfig(**{**config.LEGACY, **recorded, "output_dir": str(run)})  # as its profile runs it
    assert not [c for c in provenance.changes(str(run), cfg) if c.startswith("parameters")]
    cfg.determinism = "auto"
    assert "parameters: determinism" in provenance.changes(str(run), cfg)


# ---------------------------------------------------------------- precision
@pytest.mark.slow
def test_mixed_bfloat16_trains_with_float32_outputs(tmp_path):
    import keras

    from elastic_lib.experiment import Experiment

    exp = Experiment({**TINY, "backbone": BACKBONE, "precision": "mixed_bfloat16", "output_dir": str(tmp_path)})
    exp.setup()
    exp.load_data()
    model = exp.build_model()
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert {l.dtype_policy.name for l in model.layers if getattr(l, "kernel", None) is not None} >= {"mixed_bfloat16"}
    assert all(str(o.dtype) == "float32" for o in model.outputs)
    history = exp.train()
    assert np.isfinite(history["loss"]).all()


def test_float32_is_true_float32_unless_tf32_is_allowed():
    from elastic_lib.control import backend
    from elastic_lib.runtime import set_float32_matmul

    assert set_float32_matmul(False) == {"float32_matmul": "float32"}
    if backend.name() == "tensorflow":
        import tensorflow as tf

        assert not tf.config.experimental.tensor_float_32_execution_enabled()
    assert set_float32_matmul(True) == {"float32_matmul": "TF32 allowed"}
    if backend.name() == "tensorflow":
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    set_float32_matmul(False)


# ---------------------------------------------------------------- many devices, many jobs
@pytest.mark.backend
def test_data_parallel_over_two_devices(tmp_path):
    """JAX: keras.distribution.DataParallel over two (host) devices trains the tiny run to the
    single-device numbers within float rounding; TensorFlow: MirroredStrategy under the same name."""
    code = (
        "import elastic_lib, json, sys\n"
        "elastic_lib.setup_environment()\n"
        "from elastic_lib.experiment import Experiment\n"
        "out = {}\n"
        "for s in ('default', 'data_parallel'):\n"
        f"    exp = Experiment({{**{TINY!r}, 'backbone': {BACKBONE!r}, 'strategy': s, 'loader_workers': 1,\n"
        f"                      'output_dir': sys.argv[1] + '/' + s}})\n"
        "    exp.setup(); exp.load_data(); exp.build_model(); h = exp.train()\n"
        "    out[s] = [float(v) for v in h['loss']]\n"
        "    import keras\n"
        "    out['devices'] = len(keras.distribution.list_devices())\n"
        "    keras.distribution.set_distribution(None)\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if os.environ.get("KERAS_BACKEND") == "jax":
        assert out["devices"] == 2
    np.testing.assert_allclose(out["data_parallel"], out["default"], rtol=1e-4)


def test_data_parallel_refused_on_torch_and_an_uneven_batch(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(config.ConfigError, match="data_parallel.*JAX"):
        RunConfig(strategy="data_parallel").validate()
    with pytest.raises(config.ConfigError, match="tf.distribute"):
        RunConfig(strategy="mirrored").validate()


def test_jobs_get_one_gpu_each_and_share_memory_when_they_share_a_gpu(two_gpus, monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    assert batch.gpu_slots(1) == [{}]  # one job: every GPU (data_parallel can use them)
    two = batch.gpu_slots(2)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in two] == ["0", "1"]
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in s for s in two)
    four = batch.gpu_slots(4)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in four] == ["0", "1", "0", "1"]
    assert {s["XLA_PYTHON_CLIENT_MEM_FRACTION"] for s in four} == {"0.45"}
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")  # the user's setting is kept
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in s for s in batch.gpu_slots(4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in batch.gpu_slots(2)] == ["1", "1"]


def test_each_parallel_job_sees_its_own_gpu(tmp_path, two_gpus):
    """The driver with --jobs 2 on a box with two (fake) GPUs: the two runs' notebooks ran with
    CUDA_VISIBLE_DEVICES 0 and 1 (recorded by a stand-in notebook command)."""
    profile = write_profile(tmp_path, "jobs", grid={"backbone": [BACKBONE], "variant": ["elastic", "baseline"]})
    seen = []

    def fake_execute(self, notebook, out, params, lock_fd=None, env=None):
        seen.append((env or {}).get("CUDA_VISIBLE_DEVICES"))
        return False, "stand-in"

    import io

    from elastic_lib.control.batch import Runner

    orig = Runner.execute
    Runner.execute = fake_execute
    try:
        batch.run_profile(profile, jobs=2, results_root=str(tmp_path / "r"), aggregate=False, out=io.StringIO())
    finally:
        Runner.execute = orig
    assert sorted(seen) == ["0", "1"]


def test_weights_dir_flag_overrides_the_profile(tmp_path):
    from elastic_lib.control.registry import weights_file

    profile = write_profile(tmp_path, "w", grid={"backbone": ["mobilenet_0.75"], "variant": ["elastic"]},
                            defaults={"weights": "imagenet", "image_size": 32})  # fmt: skip
    proc = run_batch(profile, tmp_path, "--weights-dir", str(tmp_path / "nowhere"), "--no-aggregate")
    assert (
        proc.returncode == 2 and "no mobilenet_0.75 file" in proc.stderr and "elastic_lib.models.weights" in proc.stderr
    )
    assert os.path.basename(weights_file(str(tmp_path), "mobilenet_0.75")) in proc.stderr


# ---------------------------------------------------------------- the input path
def test_worker_threads_give_the_same_batches_in_order():
    """The PyDataset path with 4 threads yields, through Keras' own iteration, the 1-thread batches."""
    import keras

    from elastic_lib.data.pipeline import ArrayBatches, EpochPlan

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (100, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 100)
    plan = EpochPlan(100, seed=3, phase=2, shuffle=True, pad=1)
    identity = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Identity()])
    got = [
        identity.predict(ArrayBatches(x, y, 8, lambda a: a, 16, plan=plan, epochs=2, workers=w), verbose=0)
        for w in (1, 4)
    ]
    np.testing.assert_array_equal(got[0], got[1])
    one = ArrayBatches(x, y, 8, lambda a: a, 16, plan=plan, epochs=2)
    np.testing.assert_array_equal(got[0], np.concatenate([one[i][0] for i in range(len(one))]))


@pytest.mark.slow
def test_worker_threads_train_on_every_epochs_batches():
    """fit over several epochs (steps_per_epoch, shuffle=False: as the experiment trains) asking for
    4 threads gives the 1-thread weights exactly: Keras' threaded reader starts each epoch at batch
    0 again, so a stream of several epochs must not be read by threads (it would train on its first
    epoch's batches every epoch)."""
    import keras

    from elastic_lib.data.pipeline import ArrayBatches, EpochPlan

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (96, 4, 4, 3), dtype=np.uint8), rng.integers(0, 3, 96)
    plan = EpochPlan(96, seed=1, phase=2, shuffle=True)
    weights = []
    for w in (1, 4):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batches = ArrayBatches(x, y, 4, lambda a: a / 255, 16, plan=plan, epochs=3, workers=w)
        model.fit(batches, epochs=3, steps_per_epoch=batches.per_epoch, verbose=0, shuffle=False)
        weights.append([np.asarray(v) for v in model.get_weights()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


class _Loss:
    """A loss value that counts how often the host reads it (what a GPU would wait for)."""

    reads = 0

    def __init__(self, v):
        self.v = v

    def __float__(self):
        _Loss.reads += 1
        return float(self.v)


def test_the_divergence_guard_reads_the_loss_every_few_batches():
    import keras

    from elastic_lib.train.training import DivergenceGuard

    guard = DivergenceGuard(np.log(10), every=20)
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    _Loss.reads = 0
    guard.on_epoch_begin(0)
    for b in range(100):
        guard.on_train_batch_end(b, {"loss": _Loss(2.3)})
    guard.on_epoch_end(0, {"loss": _Loss(2.3)})
    assert _Loss.reads <= 100 // 20 + 2 and not guard.reason
    guard.on_epoch_begin(1)
    for b in range(30):
        guard.on_train_batch_end(b, {"loss": _Loss(float("nan") if b >= 7 else 2.3)})
    assert "loss nan at batch 19" in guard.reason and guard.model.stop_training
    # a saturated network (the mean since the last read near the clipped cross-entropy's ceiling)
    guard = DivergenceGuard(np.log(10), ceiling=16.1, every=20)
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.on_epoch_begin(0)
    for b in range(40):
        guard.on_train_batch_end(b, {"loss": 2.3 if b < 20 else (2.3 * 20 + 16.0 * (b - 19)) / (b + 1)})
    assert "ceiling" in guard.reason


def test_evaluation_reads_each_split_once():
    import keras

    from elastic_lib.data.pipeline import ArrayBatches
    from elastic_lib.models.exits import predict_outputs

    class Counting(ArrayBatches):
        reads = 0

        def __getitem__(self, i):
            Counting.reads += 1
            return super().__getitem__(i)

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 40)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    ds = Counting(x, y, 8, lambda a: a, 16)
    probs, labels = predict_outputs(model, ds, y)
    once = Counting.reads  # Keras' predict reads every batch (and may peek at the first)
    assert len(ds) <= once <= len(ds) + 2 and np.array_equal(labels, y) and len(probs[0]) == 40
    Counting.reads = 0
    _, labels = predict_outputs(model, ds)  # no labels given: read again for them (the old way)
    assert Counting.reads == once + len(ds) and np.array_equal(labels, y)
    with pytest.raises(ValueError, match="39 labels for 40 predictions"):
        predict_outputs(model, ds, y[:39])


@pytest.mark.parametrize(
    "backbone", ["mobilenet_0.75", *(pytest.param(b, marks=pytest.mark.slow) for b in ("inception_v3", "vgg16"))]
)
def test_resize_in_model_at_224_is_the_host_resize_within_float_rounding(backbone):
    """The paper profile upsamples 32 -> 224 in the model: its outputs on CIFAR-sized images, with
    the paper's (inception) preprocessing, are the host-resized model's within float rounding."""
    import keras

    from elastic_lib.control.profiles import load_profile
    from elastic_lib.data.pipeline import resize
    from elastic_lib.models.backbones import preprocess_input
    from elastic_lib.models.exits import build_elastic_model

    paper = [r for r in load_profile("paper").runs if r.backbone == backbone][0]
    assert paper.resize_in_model and paper.image_size == 224 and paper.preprocess == "inception"
    keras.utils.set_random_seed(0)
    host = build_elastic_model(backbone, 10, 224)
    inside = build_elastic_model(backbone, 10, 224, source_size=32)
    inside.set_weights(host.get_weights())
    x = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    prep = preprocess_input("inception_v3")
    a = host.predict(np.asarray(prep(resize(x, 224))), verbose=0)
    b = inside.predict(np.asarray(prep(x.copy())), verbose=0)
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pb, pa, rtol=0, atol=2e-5)
