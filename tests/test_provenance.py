"""Fingerprints: what made a run, and whether the working tree would still make it (done / stale / todo)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny import BACKBONE, ROOT, TINY, run_batch, write_profile

from elastic_lib.control import codehash, provenance, results
from elastic_lib.control.profiles import load_profile
from elastic_lib.control.provenance import NOTEBOOK


def test_notebook_hash_reads_code_cells_only(tmp_path):
    nb = json.loads(Path(NOTEBOOK).read_text())
    copy = tmp_path / "nb.ipynb"
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["other numbers\n"]}]
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    first["source"].append("\n# a comment, which is not code")
    copy.write_text(json.dumps(nb))
    assert provenance.notebook_hash(str(copy)) == provenance.notebook_hash(
        NOTEBOOK
    )  # outputs, comments do not make a run
    first["source"].append("\nx = 1")
    copy.write_text(json.dumps(nb))
    assert provenance.notebook_hash(str(copy)) != provenance.notebook_hash(NOTEBOOK)


def test_data_hash_is_the_sha256_of_the_data_file(tmp_path):
    import sklearn.datasets

    digits = os.path.join(os.path.dirname(sklearn.datasets.__file__), "data", "digits.csv.gz")
    assert provenance.data_hash("digits") == hashlib.sha256(Path(digits).read_bytes()).hexdigest()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not really an archive")
    assert provenance.data_hash("cifar10", str(tmp_path)) == hashlib.sha256(b"not really an archive").hexdigest()
    assert provenance.data_hash("cifar10", str(tmp_path / "missing")) is None  # not found here: unchecked


@pytest.mark.slow
def test_a_run_is_todo_then_done_then_stale_and_rerun_stale_redoes_it(tmp_path, monkeypatch):
    grid = {"backbone": [BACKBONE], "variant": ["baseline"]}
    prof = write_profile(tmp_path, "fp", grid)
    name = f"{BACKBONE}__digits__baseline"
    run_dir = tmp_path / "results" / "fp" / name
    listed = run_batch(prof, tmp_path, "--list")
    assert listed.returncode == 0 and f"{name}\ttodo" in listed.stdout
    out = run_batch(prof, tmp_path, "--no-aggregate")
    assert out.returncode == 0, out.stdout + out.stderr
    fp = results.read_params_yaml(str(run_dir))["fingerprint"]
    # every unit of the modules the run's kernel imported, hashed as the working tree has it
    modules = {k.partition(":")[0] for k in fp["code"]}
    assert {
        "control.config",
        "data.arrays",
        "models.exits",
        "experiment",
        "train.training",
        "analysis.plots",
    } <= modules
    assert not modules & set(provenance.NOT_RECORDED)
    # what the notebook can reach, not every unit of an imported module (the tolerance check is tooling)
    assert "runtime:set_determinism" in fp["code"] and "control.reproducibility:compare_run" not in fp["code"]
    assert "control.environment:machine_info" not in fp["code"]  # what a run writes about its machine
    now = provenance.library_hashes()
    assert fp["code"]["train.training:compile_model"] == " ".join(now["train.training:compile_model"][:2])
    assert fp["version"] == 2 and fp["notebook"] == provenance.notebook_hash()
    assert fp["data"] == provenance.data_hash("digits")
    assert f"{name}\tdone" in run_batch(prof, tmp_path, "--list").stdout

    # the library changes (a copy of it, edited): stale, naming the function
    lib = tmp_path / "elastic_lib"
    shutil.copytree(ROOT / "elastic_lib", lib, ignore=shutil.ignore_patterns("__pycache__"))
    src = (lib / "train" / "training.py").read_text()
    (lib / "train" / "training.py").write_text(
        src.replace("    n = len(model.outputs)\n", "    n = len(model.outputs)\n    n = n + 0\n", 1)
    )
    monkeypatch.setattr(provenance, "LIB", str(lib))
    assert provenance.status(str(run_dir)) == ("stale", ["code: elastic_lib.train.training:compile_model"])
    monkeypatch.undo()
    assert provenance.status(str(run_dir)) == ("done", [])

    # the profile changes a parameter: stale, naming it; a plain rerun keeps it, --rerun-stale redoes it
    prof = write_profile(tmp_path, "fp", grid, defaults={"learning_rate": 0.02})
    listed = run_batch(prof, tmp_path, "--list")
    assert f"{name}\tstale\tparameters: learning_rate" in listed.stdout, listed.stdout
    kept = run_batch(prof, tmp_path, "--no-aggregate")
    assert kept.returncode == 0 and f"keep {name}: DONE but stale" in kept.stdout
    redo = run_batch(prof, tmp_path, "--no-aggregate", "--rerun-stale")
    assert redo.returncode == 0 and f"redo {name}: stale" in redo.stdout, redo.stdout
    assert results.read_params(str(run_dir))["learning_rate"] == 0.02
    assert f"{name}\tdone" in run_batch(prof, tmp_path, "--list").stdout


def test_a_run_without_fingerprint_is_stale(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "params.yaml").write_text(yaml.safe_dump({"parameters": {"backbone": BACKBONE, **TINY}}))
    (d / "DONE").write_text("ok\n")
    assert provenance.status(str(d))[0] == "stale" and "no fingerprint" in provenance.status(str(d))[1][0]


def test_the_data_part_rehashes_the_recorded_file_and_never_crashes_when_it_is_gone(tmp_path):
    from elastic_lib.control.config import RunConfig

    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(b"archive v1")
    cfg = RunConfig.from_dict({"backbone": "mobilenet_0.75", "dataset": "cifar10", "data_dir": str(data)})
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.yaml").write_text(
        yaml.safe_dump({"parameters": cfg.experiment_params(), "plumbing": {"data_dir": str(data)}})
    )
    (run / "DONE").write_text("ok\n")
    provenance.record(str(run), cfg)
    fp = results.read_params_yaml(str(run))["fingerprint"]
    assert fp["data"] == hashlib.sha256(b"archive v1").hexdigest() and fp["data_source"].endswith(
        "cifar-10-python.tar.gz"
    )
    assert provenance.status(str(run)) == ("done", []) and provenance.data_checked(str(run))
    (data / "cifar-10-python.tar.gz").write_bytes(b"archive v2")
    assert provenance.status(str(run)) == ("stale", ["data: the dataset's files differ"])
    shutil.rmtree(data)  # results copied to a machine without the data: unchecked, not an error
    assert provenance.status(str(run)) == ("done", []) and not provenance.data_checked(str(run))


@pytest.mark.parametrize("profile", ["smoke", "tiny", "cifar-mini", "inception-v4", "micronet", "pruning"])
def test_committed_runs_are_not_stale_at_head(profile):
    """Every committed run was made by the code, notebook, parameters and data of this checkout.
    (CIFAR data is compared where the subsets are found beside the repo, else left unchecked.)"""
    runs = load_profile(profile).runs
    assert runs and all(results.is_done(r.output_dir) for r in runs), "a run of the profile is not committed"
    stale = {os.path.basename(r.output_dir): provenance.changes(r.output_dir, r) for r in runs}
    assert not {k: v for k, v in stale.items() if v}, (
        f"regenerate: ./run_all.sh --profile {profile} --rerun-stale",
        stale,
    )


# ---------------------------------------------------------------- a refactor keeps runs current
def _repo_copy(tmp_path) -> Path:
    """The library, notebooks, profiles and committed smoke runs, copied: a throwaway checkout."""
    repo = tmp_path / "repo"
    for rel in ("elastic_lib", "notebooks", "experiments", "results/smoke"):
        shutil.copytree(ROOT / rel, repo / rel, ignore=shutil.ignore_patterns("__pycache__", "personal"))
    return repo


def _list_smoke(repo) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "elastic_lib.control.batch", "--profile", "smoke", "--list"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_comments_and_docstrings_keep_runs_current_and_a_new_statement_makes_them_stale(tmp_path):
    """In a copy of the repo: the module that compiles the training model gets a comment and a
    docstring edit (smoke runs stay done), then a statement in the body of ``compile_model``
    (every smoke run is stale, and --list names the function)."""
    repo = _repo_copy(tmp_path)
    runs = [r.run_id() for r in load_profile("smoke").runs]
    training = repo / "elastic_lib" / "train" / "training.py"
    src = training.read_text()
    edited = src.replace('    """SGD(lr, momentum; default', '    """Compile with SGD(lr, momentum; default', 1)
    edited = edited.replace(
        "    n = len(model.outputs)\n",
        "    # one loss, one weight and one metric list per output\n    n = len(model.outputs)\n",
        1,
    )
    assert edited.count("Compile with SGD") == 1 and edited.count("one loss, one weight") == 1
    training.write_text(edited)
    assert _list_smoke(repo).splitlines() == [f"{r}\tdone" for r in runs]

    training.write_text(
        edited.replace(
            "    n = len(model.outputs)\n", "    n = len(model.outputs)\n    model.stop_training = False\n", 1
        )
    )
    assert _list_smoke(repo).splitlines() == [
        f"{r}\tstale\tcode: elastic_lib.train.training:compile_model" for r in runs
    ]


@pytest.mark.parametrize("refactor", ["move", "rename", "rename module"])
def test_moving_or_renaming_code_keeps_runs_current(tmp_path, refactor, monkeypatch):
    """A function moved to another module, a function renamed with its callers, a module renamed
    with its importers: every smoke run stays done (read in-process on the copy)."""
    repo = _repo_copy(tmp_path)
    lib = repo / "elastic_lib"
    if refactor == "move":  # training.loss_weights -> a new module, imported back
        src = (lib / "train" / "training.py").read_text()
        start = src.index("def loss_weights(")
        end = src.index("\ndef ", start + 1)
        (lib / "train" / "weighting.py").write_text(
            "from elastic_lib.control.config import LOSS_WEIGHT_SCHEMES\n\n\n" + src[start:end]
        )
        (lib / "train" / "training.py").write_text(
            src[:start] + "from elastic_lib.train.weighting import loss_weights  # noqa\n\n" + src[end:]
        )
    elif refactor == "rename":  # exits.output_names -> exits.output_layer_names, everywhere in the library
        for f in lib.rglob("*.py"):
            f.write_text(re.sub(r"\boutput_names\b", "output_layer_names", f.read_text()))
    else:  # stats.py -> statistics.py
        (lib / "analysis" / "stats.py").rename(lib / "analysis" / "statistics.py")
        for f in lib.rglob("*.py"):
            f.write_text(
                f.read_text()
                .replace("from elastic_lib.analysis.stats import", "from elastic_lib.analysis.statistics import")
                .replace(
                    "from elastic_lib.analysis import stats", "from elastic_lib.analysis import statistics as stats"
                )
            )
    before = provenance.library_hashes()
    monkeypatch.setattr(provenance, "LIB", str(lib))
    assert provenance.library_hashes() != before  # the copy was refactored
    for r in load_profile("smoke").runs:
        assert provenance.changes(r.output_dir) == [], r.run_id()


def test_upgrade_checks_the_old_fingerprint_against_its_commit(tmp_path, monkeypatch):
    """A version-1 fingerprint (file bytes) moves to version 2 by hashing the code of the commit
    that made the run, only when its byte hashes are those of that commit's files."""
    repo = tmp_path / "repo"
    for rel in ("elastic_lib", "notebooks"):
        shutil.copytree(ROOT / rel, repo / rel, ignore=shutil.ignore_patterns("__pycache__", "personal"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "made the run"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    modules = ["control.config", "train.training", "models.exits"]
    v1 = {
        "library": {
            m: hashlib.sha256((repo / "elastic_lib" / f"{m.replace('.', '/')}.py").read_bytes()).hexdigest()
            for m in modules
        },
        "notebook": provenance.notebook_hash_v1((repo / "notebooks" / "elastic_experiment.ipynb").read_text()),
        "parameters": "p",
        "data": None,
        "data_source": None,
        "backend": "tensorflow",
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "DONE").write_text("ok\n")
    doc = {"environment": {"git_commit": commit}, "fingerprint": v1}
    (run / "params.yaml").write_text(yaml.safe_dump(doc))
    # the code after the run: training.py changed and committed (the upgrade reads the run's commit)
    (repo / "elastic_lib" / "train" / "training.py").write_text("# later\n")
    subprocess.run(git + ["commit", "-qam", "later"], check=True)
    monkeypatch.setattr(provenance, "ROOT", str(repo))

    bad = run.parent / "bad"
    shutil.copytree(run, bad)
    tampered = {**doc, "fingerprint": {**v1, "library": {**v1["library"], "models.exits": "0" * 64}}}
    (bad / "params.yaml").write_text(yaml.safe_dump(tampered))
    with pytest.raises(ValueError, match=r"made by other code than commit .*elastic_lib/models/exits|exits"):
        provenance.upgrade(str(bad))

    assert provenance.upgrade(str(run)).startswith("upgraded")
    fp = results.read_params_yaml(str(run))["fingerprint"]
    want = provenance.run_code(
        codehash.read_package(str(ROOT / "elastic_lib")),
        (ROOT / "notebooks" / "elastic_experiment.ipynb").read_text(),
        modules,
    )
    assert fp["version"] == 2 and fp["code"] == want and fp["parameters"] == "p"
    assert fp["notebook"] == provenance.notebook_hash(str(ROOT / "notebooks" / "elastic_experiment.ipynb"))
    assert provenance.upgrade(str(run)) == "already version 2"
