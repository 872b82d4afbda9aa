"""Setting up on a box that already has a Keras backend (ELASTIC_PYTHON; docs/backends-and-gpus.md,
"Setting up on a box that has a backend (offline)"): scripts/check_env.py's ranges on synthetic
metadata, scripts/env.sh on an interpreter that has everything (no pip call, the backend found),
an install from a folder of wheels with --no-index (a wheel made here), and scripts/wheels.sh's
command. Nothing is downloaded: pip runs with PIP_NO_INDEX=1 and no config, the pip commands that
would reach an index are only printed (ELASTIC_SETUP_DRY_RUN=1), and every environment made lies
in a copy of scripts/ under tmp_path."""

import base64
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _load_check_env():
    spec = importlib.util.spec_from_file_location("check_env", SCRIPTS / "check_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_env = _load_check_env()
SUPPORTED = (SCRIPTS / "supported.txt").read_text()

# The interpreter that stands for the box: the JAX environment when it is set up, else the main one.
if (ROOT / ".venv-jax" / "bin" / "python").exists():
    BOX_PYTHON, BOX_BACKEND = ROOT / ".venv-jax" / "bin" / "python", "jax"
else:
    BOX_PYTHON, BOX_BACKEND = ROOT / ".venv" / "bin" / "python", "tensorflow"
needs_box_python = pytest.mark.skipif(not BOX_PYTHON.exists(), reason=f"no {BOX_PYTHON} (./run_tests.sh makes it)")


# ---------------------------------------------------------------- check_env.py on synthetic metadata
@pytest.mark.parametrize(
    "version,spec,expected",
    [
        ("3.15.1", ">=3.8,<4", True),
        ("3.7.0", ">=3.8,<4", False),
        ("4.0.0", ">=3.8,<4", False),
        ("4.0.0rc1", ">=3.8", True),  # a prerelease installed counts as installed
        ("4.0.0rc1", ">=3.8,<4", False),  # but not below 4 (PEP 440)
        ("3.9.0rc1", ">=3.8,<4", True),
        ("2.13.0+cpu", ">=2.4", True),
        ("0.4.35", ">=0.4.35", True),
        ("0.4.34", ">=0.4.35", False),
        ("0.4.35.dev20240101", ">=0.4.35", False),
        ("1.26", ">=1.26.0", True),
        ("2.2.3", "~=2.2", True),
        ("3.0", "~=2.2", False),
        ("2.1.5", "==2.1.*", True),
        ("2.2.0", "==2.1.*", False),
        ("1.0.post1", ">1.0", False),  # PEP 440
        ("1.0.post1", ">=1.0", True),
        ("1.1", ">1.0", True),
        ("2.0.dev1", "<2", False),
        ("6.0.3", "!=6.0.3", False),
        ("1.0", "", True),
    ],
)
def test_version_ranges_with_and_without_packaging(version, spec, expected):
    assert check_env._fallback_satisfies(version, spec) is expected
    assert check_env.satisfies(version, spec) is expected  # packaging when installed (it is here)


def test_missing_and_out_of_range_are_found_and_in_range_accepted():
    lines = ["keras>=3.8,<4", "numpy>=1.26", "PyYAML>=6.0", "ml-dtypes>=0.4", "papermill>=2.5", "jax>=0.4.35"]
    installed = {"keras": "3.15.1", "numpy": "1.24.4", "pyyaml": "6.0.3", "ml-dtypes": "0.7.0", "jax": "0.11.2"}
    assert check_env.problems(lines, installed) == [
        ("numpy>=1.26", "numpy 1.24.4 is out of the supported range >=1.26"),
        ("papermill>=2.5", "papermill: not installed"),
    ]
    assert check_env.problems(lines[:1], {"keras": "2.15.0"}) == [
        ("keras>=3.8,<4", "keras 2.15.0 is out of the supported range >=3.8,<4")
    ]
    tf = ["tensorflow>=2.16 | tensorflow-cpu>=2.16"]  # either distribution is TensorFlow
    assert check_env.problems(tf, {"tensorflow-cpu": "2.21.0"}) == []
    assert check_env.problems(tf, {"tensorflow": "2.20.0"}) == []
    assert [r for r, _ in check_env.problems(tf, {"tensorflow-cpu": "2.15.0"})] == ["tensorflow>=2.16"]


def test_groups_nest_and_keep_jupyter_and_test_tools_apart():
    def names(group, backend=None):
        return {check_env.canonical(check_env.parse_requirement(ln.split("|")[0])[0]) for ln in
                check_env.group_lines(SUPPORTED, group, backend)}  # fmt: skip

    gpu, run, lab, tests = names("gpu-check"), names("run"), names("lab"), names("tests")
    assert {"keras", "namex", "optree", "numpy", "pandas", "pyyaml", "h5py", "matplotlib", "scikit-learn"} <= gpu
    assert not gpu & {"papermill", "nbformat", "nbclient", "ipykernel", "jupyterlab", "pytest"}
    assert gpu < run and run < lab and run < tests
    assert {"papermill", "nbclient", "ipykernel"} <= run and not run & {"pytest", "nbval", "ruff", "jupyterlab"}
    assert {"pytest", "pytest-xdist", "nbval", "import-linter", "ruff", "selenium"} <= tests - run
    assert names("gpu-check", "jax") - gpu == {"jax"} and names("run", "torch") - run == {"torch"}
    with pytest.raises(KeyError, match="no group 'nope'"):
        check_env.group_lines(SUPPORTED, "nope")


def test_the_cpu_pins_lie_inside_the_supported_ranges():
    """Every package of requirements.txt is in a group, at a version inside its range."""
    pins = dict(
        ln.split("==") for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")
    )
    everything = check_env.group_lines(SUPPORTED, "lab") + check_env.group_lines(SUPPORTED, "tests", "tensorflow")

    def covered_by(line):
        return [check_env.canonical(check_env.parse_requirement(alt)[0]) for alt in line.split("|")]

    covered = {name for ln in everything for name in covered_by(ln)}
    assert {check_env.canonical(n) for n in pins} <= covered
    installed = {check_env.canonical(n): v for n, v in pins.items()}
    pinned = [ln for ln in dict.fromkeys(everything) if set(covered_by(ln)) & set(installed)]
    assert len(pinned) == len(pins) and check_env.problems(pinned, installed) == []


def _dist_info(site: Path, name: str, version: str) -> None:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_the_command_reads_a_site_folder(tmp_path):
    """check_env.py --path: a folder of .dist-info entries stands for an interpreter's packages."""
    site = tmp_path / "site"
    for name, version in [("keras", "3.9.0"), ("namex", "0.1.0"), ("optree", "0.16.0"), ("absl-py", "2.1.0"),
                          ("rich", "13.9.0"), ("ml_dtypes", "0.5.0"), ("packaging", "24.0"), ("numpy", "2.5.0"),
                          ("pandas", "1.5.3"), ("PyYAML", "6.0.2"), ("matplotlib", "3.9.0"),
                          ("scikit-learn", "1.6.0"), ("jax", "0.11.2")]:  # fmt: skip
        _dist_info(site, name, version)
    cmd = [sys.executable, str(SCRIPTS / "check_env.py"), "--group", "gpu-check", "--backend", "jax", "--path"]
    r = subprocess.run([*cmd, str(site)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["pandas>=2.0", "h5py>=3.10"]
    assert "pandas 1.5.3 is out of the supported range >=2.0" in r.stderr and "h5py: not installed" in r.stderr
    _dist_info(site, "h5py", "3.12.1")
    shutil.rmtree(site / "pandas-1.5.3.dist-info")
    _dist_info(site, "pandas", "2.2.3")
    r = subprocess.run([*cmd, str(site)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    bad = subprocess.run([*cmd[:2], "--group", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no group 'nope'" in bad.stderr


# ---------------------------------------------------------------- scripts/env.sh with ELASTIC_PYTHON
def _repo(tmp_path: Path, extra_requirement: str = "") -> Path:
    """A copy of scripts/ (env.sh finds its root from its own place): .venv-box is made in it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for f in ("env.sh", "tf_flavour.sh", "check_env.py", "supported.txt", "wheels.sh"):
        shutil.copy2(SCRIPTS / f, repo / "scripts" / f)
    if extra_requirement:
        supported = repo / "scripts" / "supported.txt"
        supported.write_text(supported.read_text().replace("[gpu-check]\n", f"[gpu-check]\n{extra_requirement}\n"))
    return repo


def _clean_env(**env) -> dict:
    """This session's environment without the settings env.sh reads, offline for pip, plus `env`."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ELASTIC_", "PIP_", "CONDA_")) and k not in ("KERAS_BACKEND", "VIRTUAL_ENV", "PYTHONPATH")
    }
    return {**clean, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, **env}


def _source_env(repo: Path, after: str = "", **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"source scripts/env.sh; {after}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
        env=_clean_env(**env),
    )


@needs_box_python
def test_an_interpreter_that_has_everything_gets_no_pip_call(tmp_path):
    repo = _repo(tmp_path)
    r = _source_env(
        repo,
        'command -v python; echo "$KERAS_BACKEND $ELASTIC_BACKEND"; '
        'python -c "import sys, elastic_lib; print(sys.prefix)"',
        ELASTIC_PYTHON=str(BOX_PYTHON),
        ELASTIC_SETUP_DRY_RUN="1",
    )
    assert r.returncode == 0, r.stderr
    assert "pip" not in r.stderr and "installing" not in r.stderr, r.stderr  # no pip command, not even printed
    assert f"backend {BOX_BACKEND} (the first of jax, torch, tensorflow that imports there)" in r.stderr
    assert "nothing to install" in r.stderr and "checking the run group" in r.stderr
    venv = repo / ".venv-box"
    assert r.stdout.splitlines() == [str(venv / "bin" / "python"), f"{BOX_BACKEND} {BOX_BACKEND}", str(venv)]
    assert (venv / ".elastic-base").read_text().strip() == str(BOX_PYTHON)

    # a backend it lacks, named: only that is to be installed, from the index (printed, not run) ...
    r = _source_env(repo, ELASTIC_PYTHON=str(BOX_PYTHON), ELASTIC_SETUP_DRY_RUN="1", ELASTIC_BACKEND="torch")
    assert r.returncode == 0, r.stderr
    pip = [ln for ln in r.stderr.splitlines() if "dry run:" in ln]
    assert len(pip) == 1 and pip[0].endswith(" -m pip install -q --disable-pip-version-check torch>=2.4"), r.stderr
    # ... or with --no-index from ELASTIC_WHEELS
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    dry = {"ELASTIC_PYTHON": str(BOX_PYTHON), "ELASTIC_SETUP_DRY_RUN": "1", "ELASTIC_BACKEND": "torch"}
    r = _source_env(repo, **dry, ELASTIC_WHEELS=str(wheels))
    assert r.returncode == 0 and f"--no-index --find-links {wheels} torch>=2.4" in r.stderr, r.stderr

    # run_tests.sh checks the tests group too
    (repo / "run_tests.sh").write_text('source "$(dirname "$0")/scripts/env.sh"\n')
    r = subprocess.run(
        ["bash", str(repo / "run_tests.sh")],
        capture_output=True,
        text=True,
        timeout=180,
        env=_clean_env(ELASTIC_PYTHON=str(BOX_PYTHON), ELASTIC_SETUP_DRY_RUN="1", ELASTIC_BACKEND=BOX_BACKEND),
    )
    assert r.returncode == 0 and "checking the tests group" in r.stderr and "nothing to install" in r.stderr, r.stderr


def test_elastic_python_must_name_an_interpreter(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text('#!/bin/sh\nexec python3 "$@"\n')
    (fake / "python3").chmod(0o755)
    script = "source scripts/tf_flavour.sh; box_python"
    active = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env=_clean_env(PATH=f"{fake}:{os.environ['PATH']}", ELASTIC_PYTHON="active"))  # fmt: skip
    assert active.stdout.strip() == str(fake / "python3")
    r = _source_env(_repo(tmp_path), ELASTIC_PYTHON=str(tmp_path / "no-such-python"))
    assert r.returncode == 2 and "no such interpreter" in r.stderr


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of one module (made by hand: no build backend, no index)."""
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}.py": f'VERSION = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(text):
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},sha256={digest(t)},{len(t.encode())}\n" for p, t in files.items()) + f"{dist}/RECORD,,\n"
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, t in {**files, f"{dist}/RECORD": record}.items():
            z.writestr(p, t)
    return path


@needs_box_python
def test_what_is_missing_comes_from_elastic_wheels_offline(tmp_path):
    repo = _repo(tmp_path, "elastic-dummy>=1.0")
    env = {"ELASTIC_PYTHON": str(BOX_PYTHON), "ELASTIC_BACKEND": BOX_BACKEND, "ELASTIC_SETUP_GROUP": "gpu-check"}
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _source_env(repo, **env, ELASTIC_WHEELS=str(empty))
    assert r.returncode == 2, r.stderr
    assert f"could not install elastic-dummy>=1.0 from ELASTIC_WHEELS={empty}: put wheels for them" in r.stderr
    assert "scripts/wheels.sh DIR --python-version" in r.stderr

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "elastic-dummy", "0.9")  # out of range: pip must take the other one
    _wheel(wheels, "elastic-dummy", "1.2.0")
    r = _source_env(repo, 'python -c "import elastic_dummy; print(elastic_dummy.__file__, elastic_dummy.VERSION)"',
                    **env, ELASTIC_WHEELS=str(wheels))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"installing elastic-dummy>=1.0 from the wheels in ELASTIC_WHEELS={wheels} (offline)" in r.stderr
    where, version = r.stdout.split()
    assert version == "1.2.0" and Path(where).is_relative_to(repo / ".venv-box")  # into .venv-box, not the base
    assert not list(BOX_PYTHON.parents[1].glob("lib/python*/site-packages/elastic_dummy*"))

    r = _source_env(repo, **env, ELASTIC_WHEELS=str(wheels), ELASTIC_SETUP_DRY_RUN="1")  # reused: nothing left
    assert r.returncode == 0 and "nothing to install" in r.stderr and "pip" not in r.stderr, r.stderr


# ---------------------------------------------------------------- scripts/wheels.sh
def test_wheels_sh_downloads_binary_wheels_for_the_box(tmp_path):
    def dry(*args):
        r = subprocess.run(["bash", str(SCRIPTS / "wheels.sh"), str(tmp_path / "w"), *args], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "ELASTIC_SETUP_DRY_RUN": "1"})  # fmt: skip
        assert r.returncode == 0, r.stderr
        return re.search(r"dry run: (.*)", r.stderr)[1].split()

    cmd = dry()
    assert cmd[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and cmd[cmd.index("--abi") + 1] == "cp312"
    assert "manylinux2014_x86_64" in cmd and cmd[cmd.index("-d") + 1] == str(tmp_path / "w")
    assert [check_env.parse_requirement(r)[0] for r in cmd[-3:]] == ["keras", "namex", "optree"]
    assert all(r in SUPPORTED.splitlines() for r in cmd[-3:])  # the supported ranges, not the CPU pins
    cmd = dry("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "rich>=13")
    assert "3.11" in cmd and "cp311" in cmd and "manylinux_2_28_x86_64" in cmd and cmd[-1] == "rich>=13"
    assert not (tmp_path / "w").exists()
