"""Fingerprints: what made a run, and whether the working tree would still make it (done / stale / todo)."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from elastic_lib import provenance, results
from elastic_lib.config import NOTEBOOK, load_profile
from test_batch import ROOT, TINY, run_batch, write_profile


def test_notebook_hash_reads_code_cells_only(tmp_path):
    nb = json.loads(Path(NOTEBOOK).read_text())
    copy = tmp_path / "nb.ipynb"
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["other numbers\n"]}]
    copy.write_text(json.dumps(nb))
    assert provenance.notebook_hash(str(copy)) == provenance.notebook_hash(NOTEBOOK)  # outputs do not make a run
    next(c for c in nb["cells"] if c["cell_type"] == "code")["source"].append("\nx = 1")
    copy.write_text(json.dumps(nb))
    assert provenance.notebook_hash(str(copy)) != provenance.notebook_hash(NOTEBOOK)


def test_data_hash_is_the_sha256_of_the_data_file(tmp_path):
    import sklearn.datasets

    digits = os.path.join(os.path.dirname(sklearn.datasets.__file__), "data", "digits.csv.gz")
    assert provenance.data_hash("digits") == hashlib.sha256(Path(digits).read_bytes()).hexdigest()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not really an archive")
    assert provenance.data_hash("cifar10", str(tmp_path)) == hashlib.sha256(b"not really an archive").hexdigest()
    assert provenance.data_hash("cifar10", str(tmp_path / "missing")) is None  # not found here: unchecked


def test_a_run_is_todo_then_done_then_stale_and_rerun_stale_redoes_it(tmp_path, monkeypatch):
    prof = write_profile(tmp_path, "fp", {"backbone": ["mobilenet_0.75"], "variant": ["baseline"]})
    run_dir = tmp_path / "results" / "fp" / "mobilenet_0.75__digits__baseline"
    listed = run_batch(prof, tmp_path, "--list")
    assert listed.returncode == 0 and "mobilenet_0.75__digits__baseline\ttodo" in listed.stdout
    out = run_batch(prof, tmp_path, "--no-aggregate")
    assert out.returncode == 0, out.stdout + out.stderr
    fp = results.read_params_yaml(str(run_dir))["fingerprint"]
    # what the run's kernel imported, each module hashed as it is in the working tree
    assert {"config", "data", "exits", "experiment", "training", "plots"} <= set(fp["library"])
    assert fp["library"]["training"] == hashlib.sha256((ROOT / "elastic_lib" / "training.py").read_bytes()).hexdigest()
    assert fp["notebook"] == provenance.notebook_hash() and fp["data"] == provenance.data_hash("digits")
    assert "mobilenet_0.75__digits__baseline\tdone" in run_batch(prof, tmp_path, "--list").stdout

    # the library changes (a copy of it, edited): stale, naming the file
    lib = tmp_path / "elastic_lib"
    shutil.copytree(ROOT / "elastic_lib", lib, ignore=shutil.ignore_patterns("__pycache__"))
    with open(lib / "training.py", "a") as f:
        f.write("\n# changed\n")
    monkeypatch.setattr(provenance, "LIB", str(lib))
    assert provenance.status(str(run_dir)) == ("stale", ["library: elastic_lib/training.py"])
    monkeypatch.undo()
    assert provenance.status(str(run_dir)) == ("done", [])

    # the profile changes a parameter: stale, naming it; a plain rerun keeps it, --rerun-stale redoes it
    prof = write_profile(tmp_path, "fp", {"backbone": ["mobilenet_0.75"], "variant": ["baseline"]},
                         defaults={"learning_rate": 0.02})
    listed = run_batch(prof, tmp_path, "--list")
    assert "mobilenet_0.75__digits__baseline\tstale\tparameters: learning_rate" in listed.stdout, listed.stdout
    kept = run_batch(prof, tmp_path, "--no-aggregate")
    assert kept.returncode == 0 and "keep mobilenet_0.75__digits__baseline: DONE but stale" in kept.stdout
    redo = run_batch(prof, tmp_path, "--no-aggregate", "--rerun-stale")
    assert redo.returncode == 0 and "redo mobilenet_0.75__digits__baseline: stale" in redo.stdout, redo.stdout
    assert results.read_params(str(run_dir))["learning_rate"] == 0.02
    assert "mobilenet_0.75__digits__baseline\tdone" in run_batch(prof, tmp_path, "--list").stdout


def test_a_run_without_fingerprint_is_stale(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "params.yaml").write_text(yaml.safe_dump({"parameters": {"backbone": "mobilenet_0.75", **TINY}}))
    (d / "DONE").write_text("ok\n")
    assert provenance.status(str(d))[0] == "stale" and "no fingerprint" in provenance.status(str(d))[1][0]


def test_the_data_part_rehashes_the_recorded_file_and_never_crashes_when_it_is_gone(tmp_path):
    from elastic_lib.config import RunConfig

    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(b"archive v1")
    cfg = RunConfig.from_dict({"backbone": "mobilenet_0.75", "dataset": "cifar10", "data_dir": str(data)})
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.yaml").write_text(yaml.safe_dump({"parameters": cfg.experiment_params(),
                                                     "plumbing": {"data_dir": str(data)}}))
    (run / "DONE").write_text("ok\n")
    provenance.record(str(run), cfg)
    fp = results.read_params_yaml(str(run))["fingerprint"]
    assert fp["data"] == hashlib.sha256(b"archive v1").hexdigest() and fp["data_source"].endswith("cifar-10-python.tar.gz")
    assert provenance.status(str(run)) == ("done", []) and provenance.data_checked(str(run))
    (data / "cifar-10-python.tar.gz").write_bytes(b"archive v2")
    assert provenance.status(str(run)) == ("stale", ["data: the dataset's files differ"])
    shutil.rmtree(data)  # results copied to a machine without the data: unchecked, not an error
    assert provenance.status(str(run)) == ("done", []) and not provenance.data_checked(str(run))


@pytest.mark.parametrize("profile", ["smoke", "cifar-mini", "inception-v4", "micronet", "pruning"])
def test_committed_runs_are_not_stale_at_head(profile):
    """Every committed run was made by the code, notebook, parameters and data of this checkout.
    (CIFAR data is compared where the subsets are found beside the repo, else left unchecked.)"""
    runs = load_profile(profile).runs
    assert runs and all(results.is_done(r.output_dir) for r in runs), "a run of the profile is not committed"
    stale = {os.path.basename(r.output_dir): provenance.changes(r.output_dir, r) for r in runs}
    assert not {k: v for k, v in stale.items() if v}, ("regenerate: ./run_all.sh --profile "
                                                       f"{profile} --rerun-stale", stale)

