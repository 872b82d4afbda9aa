"""GPU-aware setup without a GPU: which TensorFlow build scripts/env.sh installs (a fake
nvidia-smi on PATH; pip resolves the choice with --dry-run), the paper profile's refusal on a
CPU, the active conda env used as it is, offline ImageNet weights (files made here), and the
mixed-precision option."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elastic_lib.control import batch
from elastic_lib.control.config import ConfigError, RunConfig
from elastic_lib.control.paths import ROOT
from elastic_lib.control.registry import weights_file
from elastic_lib.models import weights

FAKE_SMI = "#!/bin/sh\n[ \"$1\" = -L ] && echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-fake)'\n"


@pytest.fixture
def fake_gpu(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return str(bin_dir)


def _bash(script: str, path_prefix: str = "", **env) -> subprocess.CompletedProcess:
    path = f"{path_prefix}:{os.environ['PATH']}" if path_prefix else os.environ["PATH"]
    if not path_prefix:  # a real nvidia-smi of this machine must not decide the "no GPU" case
        path = ":".join(p for p in path.split(":") if not (Path(p) / "nvidia-smi").exists())
    full = {**{k: v for k, v in os.environ.items() if k not in ("ELASTIC_TF", "CONDA_PREFIX")}, "PATH": path, **env}
    return subprocess.run(
        ["bash", "-c", f"source scripts/tf_flavour.sh; {script}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def test_flavour_follows_nvidia_smi_and_elastic_tf(fake_gpu):
    assert _bash("tf_flavour").stdout.strip() == "cpu"
    assert _bash("tf_flavour", fake_gpu).stdout.strip() == "gpu"
    assert _bash("tf_flavour", fake_gpu, ELASTIC_TF="cpu").stdout.strip() == "cpu"
    assert _bash("tf_flavour", ELASTIC_TF="gpu").stdout.strip() == "gpu"
    bad = _bash("tf_flavour", ELASTIC_TF="cuda")
    assert bad.returncode == 2 and "use gpu, cpu" in bad.stderr


def test_requirements_swap_only_tensorflow(fake_gpu):
    cpu = _bash("requirements_for cpu").stdout.splitlines()
    gpu = _bash('requirements_for "$(tf_flavour)"', fake_gpu).stdout.splitlines()
    diff = [(a, b) for a, b in zip(cpu, gpu) if a != b]
    assert diff == [("tensorflow-cpu==2.21.0", "tensorflow[and-cuda]==2.21.0")] and len(cpu) == len(gpu)


@pytest.mark.parametrize(
    "backend,cpu_line,gpu_line",
    [("jax", "jax==0.10.2", "jax[cuda12]==0.10.2"), ("torch", "torch==2.13.0+cpu", "torch==2.13.0")],
)
def test_other_backends_swap_the_tensorflow_line_for_theirs(fake_gpu, backend, cpu_line, gpu_line):
    tf = _bash("requirements_for cpu").stdout.splitlines()
    for flavour, line in (("cpu", cpu_line), ("gpu", gpu_line)):
        mine = _bash(f"requirements_for {flavour} {backend}").stdout.splitlines()
        assert [(a, b) for a, b in zip(tf, mine) if a != b] == [("tensorflow-cpu==2.21.0", line)] and len(tf) == len(
            mine
        )
    assert _bash(f"venv_for {backend}").stdout.strip() == str(Path(ROOT) / f".venv-{backend}")
    assert _bash("venv_for tensorflow").stdout.strip() == str(Path(ROOT) / ".venv")
    assert _bash("elastic_backend", ELASTIC_BACKEND=backend).stdout.strip() == backend
    bad = _bash("elastic_backend", ELASTIC_BACKEND="mxnet")
    assert bad.returncode == 2 and "use tensorflow, jax or torch" in bad.stderr


def test_pip_resolves_the_cuda_build_with_a_fake_gpu(fake_gpu, tmp_path):
    """pip install --dry-run of what env.sh would install: TensorFlow with its CUDA/cuDNN wheels."""
    import json

    req = tmp_path / "req.txt"
    req.write_text(_bash('requirements_for "$(tf_flavour)"', fake_gpu).stdout)
    tf_line = next(ln for ln in req.read_text().splitlines() if ln.startswith("tensorflow"))
    report = tmp_path / "report.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "-q",
            "--report",
            str(report),
            tf_line,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0 and (
        "Could not find" in r.stderr or "connection" in r.stderr.lower() or "Name or service" in r.stderr
    ):
        pytest.skip(f"no package index reachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-2000:]
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "tensorflow" in names and "tensorflow-cpu" not in names
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= names


def test_an_active_conda_env_is_used_as_it_is(tmp_path):
    r = subprocess.run(
        ["bash", "-c", 'source scripts/env.sh; command -v python; echo "venv_on_path=${PATH%%:*}"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "CONDA_PREFIX": str(tmp_path),
            "CONDA_DEFAULT_ENV": "elastic",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
    )
    assert r.returncode == 0, r.stderr
    assert "using the active conda env" in r.stderr and "setting up" not in r.stderr
    assert r.stdout.splitlines()[0] == str(Path(sys.executable).parent / "python")


def test_paper_profile_refuses_a_machine_without_gpu(monkeypatch):
    monkeypatch.setenv(
        "PATH", ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists())
    )
    r = subprocess.run(
        [sys.executable, "-m", "elastic_lib.control.batch", "--profile", "paper"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert (
        "is meant for a GPU box" in r.stderr and "--allow-cpu" in r.stderr and "On this CPU it would take" in r.stderr
    )
    assert "days" in r.stderr or "no estimate" in r.stderr


def test_gpus_reads_nvidia_smi(fake_gpu, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_gpu}:{os.environ['PATH']}")
    assert batch.gpus() == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-fake)"]


# ---------------------------------------------------------------- offline weights
def test_weights_dir_serves_imagenet_runs_offline(tmp_path):
    """A weights file made here stands in for the download: the run loads exactly it."""
    import keras

    from elastic_lib.experiment import Experiment
    from elastic_lib.models.backbones import build_backbone

    def fake_imagenet(name):  # what Keras' download would hand back: a no-top backbone with weights
        keras.utils.set_random_seed(123)
        return build_backbone(name, (224, 224, 3), None)

    files = weights.download(["mobilenet_0.75"], str(tmp_path / "w"), build=fake_imagenet)
    assert files == [weights_file(str(tmp_path / "w"), "mobilenet_0.75")]
    manifest = (tmp_path / "w" / "MANIFEST.csv").read_text()
    assert "mobilenet_0.75_imagenet_notop.weights.h5" in manifest and len(manifest.splitlines()) == 2
    exp = Experiment({"weights": "imagenet", "weights_dir": str(tmp_path / "w"), "output_dir": str(tmp_path / "run")})
    assert exp.cfg.weights_arg == files[0]
    exp.load_data()
    model = exp.build_model()
    ref = fake_imagenet("mobilenet_0.75")
    for layer in (l for l in ref.layers if l.weights):
        for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_weights_dir_without_the_file_names_the_download_command(tmp_path):
    with pytest.raises(ConfigError, match="python -m elastic_lib.models.weights download --backbones vgg16"):
        RunConfig.from_dict({"backbone": "vgg16", "weights": "imagenet", "weights_dir": str(tmp_path)})


def test_download_lists_the_profiles_imagenet_backbones():
    assert weights.profile_backbones("paper") == [
        "mobilenet_0.75",
        "inception_v3",
        "resnet50_legacy",
        "densenet121",
        "densenet169",
        "vgg16",
    ]
    assert weights.profile_backbones("paper-dryrun") == []  # random weights


# ---------------------------------------------------------------- speed options
def test_mixed_float16_computes_in_float16_with_float32_outputs(tmp_path):
    import keras

    from elastic_lib.experiment import Experiment

    exp = Experiment({"precision": "mixed_float16", "limit_per_class": 5, "output_dir": str(tmp_path)})
    exp.load_data()
    model = exp.build_model()
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    assert model.get_layer("conv1").compute_dtype == "float16" and model.get_layer("conv1").kernel.dtype == "float32"
    outs = model(np.zeros((2, 32, 32, 3), np.float32))
    assert all(o.dtype == "float32" for o in outs)
