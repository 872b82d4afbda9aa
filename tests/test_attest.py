"""Attesting finished runs by replay (elastic_lib.control.attest): a rewrite that computes the same
keeps a run current, one that computes something else is refused."""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from tiny import BACKBONE, ROOT, write_profile

from elastic_lib.control import attest
from elastic_lib.control.config import LEGACY


def _write_run(folder, csv: str, extra: dict | None = None):
    folder.mkdir(parents=True)
    (folder / "exits.csv").write_text(csv)
    (folder / "latency.csv").write_text(f"ms\n{os.getpid()}\n")  # a measured time: not compared
    doc = {"parameters": {"seed": 0}, "determinism": {"seed": 0}, "environment": {"machine": str(folder)}}
    (folder / "params.yaml").write_text(yaml.safe_dump({**doc, **(extra or {})}))
    return folder


def test_compare_finds_what_differs_and_leaves_timings_out(tmp_path):
    a = _write_run(tmp_path / "a", "output,err\nexit01,10.5\n")
    b = _write_run(tmp_path / "b", "output,err\nexit01,10.5\n")
    assert attest.compare(str(a), str(b)) == (["exits.csv"], [])
    (b / "exits.csv").write_text("output,err\nexit01,10.6\n")
    assert attest.compare(str(a), str(b))[1] == ["exits.csv: differs"]
    (b / "exits.csv").unlink()
    assert attest.compare(str(a), str(b))[1] == ["exits.csv: only in the old replay"]
    # measured times differ from run to run; the rest of the row must not
    (a / "summary.csv").write_text("output,top1,train_s,final_latency_ms\nfinal,3.0,10.1,2.5\n")
    (b / "exits.csv").write_text("output,err\nexit01,10.5\n")
    (b / "summary.csv").write_text("output,top1,train_s,final_latency_ms\nfinal,3.0,11.7,2.9\n")
    assert attest.compare(str(a), str(b)) == (["exits.csv", "summary.csv"], [])
    (b / "summary.csv").write_text("output,top1,train_s,final_latency_ms\nfinal,3.1,11.7,2.9\n")
    assert attest.compare(str(a), str(b))[1] == ["summary.csv: differs"]
    c = _write_run(tmp_path / "c", "output,err\nexit01,10.5\n", {"parameters": {"seed": 1}})
    assert "params.yaml parameters: differs" in attest.compare(str(a), str(c))[1]


def test_each_replay_may_learn_from_its_own_teacher_replay(tmp_path):
    """A refinery run's replays learn from teacher replays beside them: the teachers' paths differ,
    nothing else may."""
    a = _write_run(
        tmp_path / "a", "output,err\nexit01,10.5\n", {"parameters": {"refinery_run": str(tmp_path / "a-teacher")}}
    )
    b = _write_run(
        tmp_path / "b", "output,err\nexit01,10.5\n", {"parameters": {"refinery_run": str(tmp_path / "b-teacher")}}
    )
    assert attest.compare(str(a), str(b)) == (["exits.csv"], [])
    c = _write_run(tmp_path / "c", "output,err\nexit01,10.5\n", {"parameters": {"refinery_run": "results/other"}})
    assert "params.yaml parameters: differs" in attest.compare(str(a), str(c))[1]


def test_a_kept_replay_is_used_again_only_under_the_runs_hashseed_and_the_current_code(tmp_path):
    """--keep lets an interrupted attestation go on; a replay kept from a shell with another
    PYTHONHASHSEED (recorded in params.yaml: a difference compare() would report), one that was
    itself interrupted and resumed, one made on the checkout before its code changed again, or a
    base-side replay made by another base's code, is redone."""
    from elastic_lib.control import provenance

    # what a run records: its units as "deep shallow" hashes, the notebook's hash, the format's version
    code = {**provenance.code_hashes(["runtime"]), "version": provenance.VERSION}
    run = _write_run(tmp_path / "run", "x\n", {"determinism": {"pythonhashseed": "0"}})
    same = _write_run(tmp_path / "same", "x\n", {"determinism": {"pythonhashseed": "0"}, "fingerprint": code})
    unset = _write_run(tmp_path / "unset", "x\n", {"determinism": {"pythonhashseed": ""}, "fingerprint": code})
    older = {"code": {**code["code"], "runtime:set_determinism": f"{'0' * 16} {'0' * 16}"}}
    before = _write_run(
        tmp_path / "before", "x\n", {"determinism": {"pythonhashseed": "0"}, "fingerprint": {**code, **older}}
    )
    assert attest.reusable(str(same), str(run))
    assert not attest.reusable(str(unset), str(run))
    assert not attest.reusable(str(unset), str(run), rev="HEAD")
    assert not attest.reusable(str(before), str(run))
    # the base's side: a replay made by the base's code stands, one kept from an attestation
    # against another base (older code) does not
    assert attest.reusable(str(same), str(run), rev="HEAD")
    assert not attest.reusable(str(before), str(run), rev="HEAD")
    (same / "summary.csv").write_text('output,resumed_from\nfinal,"phase1, phase2 finished"\n')
    assert not attest.reusable(str(same), str(run))  # finished by resuming: redone
    (same / "summary.csv").write_text("output,resumed_from\nfinal,\n")
    assert attest.reusable(str(same), str(run))


def test_the_replay_shortens_a_run_and_never_lengthens_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    params = {
        "phase1_epochs": 5,
        "phase2_epochs": 40,
        "limit_per_class": 0,
        "test_limit_per_class": 2,
        "latency_repeats": 0,
        "latency_images": 30,
        "backbone": "vgg16",
        "learning_rate": 0.01,
    }
    (run / "params.yaml").write_text(yaml.safe_dump({"parameters": params}))
    got = attest.replay_params(str(run))
    assert got == {
        **LEGACY,  # parameters added since the run, at the value the run had without them
        **params,
        "phase1_epochs": 1,
        "phase2_epochs": 1,
        "limit_per_class": 10,
        "test_limit_per_class": 2,
        "latency_repeats": 0,
        "latency_images": 2,
    }


@pytest.mark.slow
def test_a_rewrite_that_computes_the_same_is_attested_and_one_that_does_not_is_refused(tmp_path):
    """In a throwaway git checkout: two tiny runs made at a base commit; a rewrite of
    ``compile_model`` that computes the same (a no-op statement) makes them stale, and ``attest``
    brings the elastic run back to done after identical replays; a rewrite that changes the
    learning rate by one part in a thousand is refused for the baseline run, which stays stale."""
    repo = tmp_path / "repo"
    for rel in ("elastic_lib", "notebooks", "experiments"):
        shutil.copytree(ROOT / rel, repo / rel, ignore=shutil.ignore_patterns("__pycache__", "personal"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    env = {**os.environ, "PYTHONPATH": str(repo)}

    def run(*args, check=True):
        proc = subprocess.run(
            [sys.executable, "-m", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0 or not check, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    profile = write_profile(tmp_path, "att")
    run(
        "elastic_lib.control.batch",
        "--profile",
        profile,
        "--results-root",
        str(repo / "results"),
        "--figures-root",
        str(repo / "figures"),
        "--no-aggregate",
    )
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    runs = [repo / "results" / "att" / f"{BACKBONE}__digits__{v}" for v in ("elastic", "baseline")]
    listing = run(
        "elastic_lib.control.batch", "--profile", profile, "--results-root", str(repo / "results"), "--list"
    ).stdout
    assert listing.count("\tdone") == 2, listing

    training = repo / "elastic_lib" / "train" / "training.py"
    src = training.read_text()
    anchor = "    n = len(model.outputs)\n"
    assert src.count(anchor) == 1
    training.write_text(src.replace(anchor, anchor + "    n = int(n)\n"))  # the same computation, other code
    listing = run(
        "elastic_lib.control.batch", "--profile", profile, "--results-root", str(repo / "results"), "--list"
    ).stdout
    assert listing.count("\tstale\tcode: elastic_lib.train.training:compile_model") == 2, listing

    out = run("elastic_lib.control.attest", "--base", "HEAD", str(runs[0])).stdout
    assert "attested" in out, out
    doc = yaml.safe_load((runs[0] / "params.yaml").read_text())
    entry = doc["attested"][-1]
    assert entry["changed_units"] == ["train.training:compile_model"]
    assert {"model.weights.h5", "exits.csv", "history.csv"} <= set(entry["files_identical"])
    listing = run(
        "elastic_lib.control.batch", "--profile", profile, "--results-root", str(repo / "results"), "--list"
    ).stdout
    assert f"{BACKBONE}__digits__elastic\tdone" in listing and f"{BACKBONE}__digits__baseline\tstale" in listing

    # a rewrite that computes something else: the replays differ, the run stays stale
    same = src.replace(anchor, anchor + "    n = int(n)\n")
    training.write_text(same.replace(anchor, anchor + "    lr = lr * 1.001\n"))  # a learning rate 0.1 % higher
    before = (runs[1] / "params.yaml").read_text()
    proc = run("elastic_lib.control.attest", "--base", "HEAD", str(runs[1]), check=False)
    assert proc.returncode == 1 and "the replays differ" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert (runs[1] / "params.yaml").read_text() == before
    history = pd.read_csv(runs[1] / "history.csv")
    assert len(history) >= 2  # the base run itself is untouched
