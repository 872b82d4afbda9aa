"""RunConfig / profile validation, and the run-directory helpers (atomic writes, locks,
clearing, collecting)."""

import errno
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from elastic_lib.control import config, profiles, results
from elastic_lib.control.config import ConfigError, RunConfig
from elastic_lib.control.profiles import load_profile
from elastic_lib.control.results import atomic_write_text, clear_run, collect, try_lock


# ---------------------------------------------------------------- RunConfig
def test_valid_config_and_derived_values():
    cfg = RunConfig.from_dict({"backbone": "vgg16", "dataset": "digits", "exits": "block2_pool, block4_pool"})
    assert cfg.exit_spec == ["block2_pool", "block4_pool"]
    assert RunConfig.from_dict({"variant": "baseline"}).exit_spec == "none"
    assert RunConfig.from_dict({"exits": "deeper_half"}).exit_spec == "deeper_half"
    c100 = RunConfig.from_dict({"dataset": "cifar100", "label_mode": "coarse"})
    assert c100.run_id() == "mobilenet_0.75__cifar100coarse__elastic"
    assert c100.run_id(with_seed=True).endswith("__seed0")
    assert RunConfig.from_dict({"learning_rate": 1}).learning_rate == 1  # an int is a valid float


def test_unknown_key():
    with pytest.raises(ConfigError, match="epochs") as err:
        RunConfig.from_dict({"epochs": 2})
    assert "phase1_epochs" in str(err.value)  # lists the valid parameters


@pytest.mark.parametrize(
    "key, value",
    [("phase2_epochs", "2"), ("image_size", 32.0), ("augment", 1), ("image_size", True), ("learning_rate", "0.1")],
)
def test_wrong_type(key, value):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict({key: value})


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="mobilenet_0.75") as err:
        RunConfig.from_dict({"backbone": "resnet51"})
    assert "resnet51" in str(err.value)


def test_image_size_below_backbone_minimum():
    with pytest.raises(ConfigError, match="75") as err:
        RunConfig.from_dict({"backbone": "inception_v3", "image_size": 64})
    assert "64" in str(err.value)
    RunConfig.from_dict({"backbone": "inception_v3", "image_size": 75})


@pytest.mark.parametrize(
    "key, value, valid",
    [
        ("dataset", "mnist", "cifar100"),
        ("variant", "tiny", "baseline"),
        ("final_head", "avg", "gap"),
        ("loss_weights", "x", "depth"),
        ("exit_criterion", "margin", "entropy"),
    ],
)
def test_unknown_choices(key, value, valid):
    with pytest.raises(ConfigError, match=valid) as err:
        RunConfig.from_dict({key: value})
    assert value in str(err.value)


def test_negative_and_missing_paths(tmp_path):
    with pytest.raises(ConfigError, match="phase2_epochs"):
        RunConfig.from_dict({"phase2_epochs": -1})
    with pytest.raises(ConfigError, match="data_dir"):
        RunConfig.from_dict({"dataset": "cifar10", "data_dir": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="weights"):
        RunConfig.from_dict({"weights": str(tmp_path / "nope.h5")})


# ---------------------------------------------------------------- profiles
def write_profile(tmp_path, spec, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_profile_expands_grid(tmp_path):
    path = write_profile(
        tmp_path,
        {
            "description": "d",
            "defaults": {"dataset": "digits", "phase2_epochs": 2},
            "grid": {"backbone": ["mobilenet_0.75", "vgg16"], "variant": ["elastic", "baseline"]},
            "overrides": {"vgg16": {"learning_rate": 0.05}},
        },
        "grid.yaml",
    )
    prof = load_profile(path, results_root=str(tmp_path / "res"))
    assert prof.name == "grid" and prof.description == "d" and len(prof.runs) == 4
    dirs = {r.output_dir for r in prof.runs}
    assert len(dirs) == 4 and all(d.startswith(str(tmp_path / "res" / "grid")) for d in dirs)
    assert {r.learning_rate for r in prof.runs if r.backbone == "vgg16"} == {0.05}
    assert {r.learning_rate for r in prof.runs if r.backbone != "vgg16"} == {RunConfig().learning_rate}
    assert all(r.phase2_epochs == 2 for r in prof.runs)


def test_profile_cases_cross_the_grid_pin_variants_and_name_refinery_runs(tmp_path):
    cases = {
        "ce": {},
        "am": {"head": "am_softmax"},
        "am_refinery": {"head": "am_softmax", "refinery_run": "@am"},
        "distill": {"variant": "elastic", "self_distillation": True},
    }
    path = write_profile(tmp_path, {"grid": {"variant": ["baseline", "elastic"]}, "cases": cases}, "cases.yaml")
    runs = load_profile(path, results_root=str(tmp_path / "res")).runs
    names = [os.path.basename(r.output_dir) for r in runs]
    assert names == [f"mobilenet_0.75__digits__{v}__{c}" for v in ("baseline", "elastic") for c in cases][:3] + [
        f"mobilenet_0.75__digits__elastic__{c}" for c in cases
    ]  # distill pins elastic: no baseline run
    refined = [r for r in runs if r.output_dir.endswith("am_refinery")]
    assert [r.refinery_dir for r in refined] == [r.output_dir[: -len("_refinery")] for r in refined]
    assert [r.head for r in runs[:3]] == ["softmax", "am_softmax", "am_softmax"] and runs[-1].self_distillation
    cases["early"] = {"refinery_run": "@late"}
    path = write_profile(tmp_path, {"cases": cases}, "bad.yaml")
    with pytest.raises(ConfigError, match="refinery_run '@late' must name an earlier case"):
        load_profile(path, results_root=str(tmp_path / "res"))
    with pytest.raises(ConfigError, match="only inside a profile's cases"):
        RunConfig(refinery_run="@am").validate()


@pytest.mark.parametrize(
    "spec, named",
    [
        ({"grids": {"backbone": ["vgg16"]}}, "grids"),  # unknown top-level key
        ({"defaults": {"epochs": 3}}, "epochs"),  # unknown defaults key
        ({"defaults": {"batch_size": "32"}}, "batch_size"),  # wrong type
        ({"grid": {"optimizer": ["sgd"]}}, "optimizer"),  # unknown grid key
        ({"defaults": ["dataset"]}, "defaults"),  # not a mapping
        ({"grid": {"backbone": ["resnet50"], "image_size": [16]}}, "image_size"),
        ({"base": "nope", "grid": {"backbone": ["vgg16"]}}, "base 'nope' is not another profile"),
        ({"base": "smoke", "defaults": {"frozen_bn": "train"}}, "frozen_bn"),  # the base's values are checked too
    ],
)
def test_profile_errors_name_the_problem(tmp_path, spec, named):
    with pytest.raises(ConfigError, match=named):
        load_profile(write_profile(tmp_path, spec), results_root=str(tmp_path))


def test_profile_base_is_merged_key_by_key(tmp_path):
    prof = load_profile(
        write_profile(tmp_path, {"base": "smoke", "defaults": {"phase2_epochs": 2}, "grid": {"backbone": ["vgg16"]}}),
        results_root=str(tmp_path),
    )
    assert [r.run_id() for r in prof.runs] == ["vgg16__digits__elastic", "vgg16__digits__baseline"]
    assert all(r.phase2_epochs == 2 and r.reduce_lr_patience == 2 for r in prof.runs)  # the rest from smoke


def test_unknown_profile_name():
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("no_such_profile_xyz")


def test_grid_axes_get_distinct_run_dirs(tmp_path):
    path = write_profile(
        tmp_path,
        {"grid": {"backbone": ["mobilenet_0.75"], "image_size": [32, 64], "loss_weights": ["uniform", "depth"]}},
    )
    runs = load_profile(path, results_root=str(tmp_path)).runs
    assert len(runs) == 4
    assert len({r.output_dir for r in runs}) == 4


def test_override_key_typo_is_an_error(tmp_path):
    path = write_profile(
        tmp_path, {"grid": {"backbone": ["resnet50"]}, "overrides": {"resnet5O": {"learning_rate": 0.5}}}
    )
    with pytest.raises(ConfigError, match="resnet5O"):
        load_profile(path, results_root=str(tmp_path))


# ---------------------------------------------------------------- atomic writes
def _temps(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp_")]


def test_atomic_write_text(tmp_path):
    path = tmp_path / "sub" / "a.csv"
    atomic_write_text(str(path), "x,y\n1,2\n")
    assert path.read_text() == "x,y\n1,2\n"
    atomic_write_text(str(path), "replaced\n")
    assert path.read_text() == "replaced\n"
    assert _temps(path.parent) == []
    assert sorted(os.listdir(path.parent)) == ["a.csv"]


def test_atomic_write_failure_keeps_old_content(tmp_path):
    path = tmp_path / "a.csv"
    atomic_write_text(str(path), "old\n")
    with pytest.raises(TypeError):
        atomic_write_text(str(path), 12345)  # not a str: the write fails midway
    assert path.read_text() == "old\n"
    assert _temps(tmp_path) == []


# ---------------------------------------------------------------- locks
def test_lock_is_exclusive(tmp_path):
    run = str(tmp_path / "run")
    fd = try_lock(run)
    assert fd is not None
    try:
        assert results.lock_holder(run) == f"host {socket.gethostname()} pid {os.getpid()}"
        assert try_lock(run) is None  # a second lock in this process is refused
        # and from another process
        code = (
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", code, os.path.join(run, ".lock")]).returncode == 3
    finally:
        os.close(fd)
    fd = try_lock(run)  # released when its descriptor is closed
    assert fd is not None
    os.close(fd)


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_locks_stops_the_driver(tmp_path, monkeypatch, code):
    def refuse(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(results.fcntl, "flock", refuse)
    with pytest.raises(results.LockUnsupportedError, match="refuses flock.*will not run unlocked"):
        try_lock(str(tmp_path / "run"))


# ---------------------------------------------------------------- clearing and collecting
def test_clear_run_keeps_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outputs = ["exits.csv", "history.csv", "params.yaml", "DONE", "FAILED", ".tmp_abc123"]
    for name in outputs + [".lock"]:
        (run / name).write_text("x")
    (run / "checkpoints").mkdir()
    clear_run(str(run))
    left = set(os.listdir(run))
    assert ".lock" in left
    assert not left & set(outputs)


def test_mark_done_and_failed(tmp_path):
    run = str(tmp_path)
    results.mark_failed(run, "boom")
    assert not results.is_done(run) and (tmp_path / "FAILED").read_text() == "boom\n"
    results.mark_done(run)
    assert results.is_done(run) and not (tmp_path / "FAILED").exists()


def _fake_run(profile_dir, name, params, rows, done):
    run = profile_dir / name
    run.mkdir(parents=True)
    (run / "params.yaml").write_text(yaml.safe_dump({"parameters": params}))
    pd.DataFrame(rows).to_csv(run / "exits.csv", index=False)
    if done:
        (run / "DONE").write_text("ok\n")


def test_collect_only_done_runs(tmp_path):
    prof = tmp_path / "profile"
    base = {"backbone": "vgg16", "dataset": "digits", "variant": "elastic", "seed": 0}
    _fake_run(prof, "a_done", base, {"output": ["exit01", "final"], "top1_err_pct": [50.0, 40.0]}, True)
    _fake_run(prof, "b_running", {**base, "backbone": "resnet50"}, {"output": ["final"], "top1_err_pct": [1.0]}, False)
    _fake_run(
        prof,
        "c_done",
        {**base, "dataset": "cifar100", "label_mode": "coarse", "seed": 3},
        {"output": ["final"], "top1_err_pct": [70.0]},
        True,
    )
    df = collect(str(prof), "exits.csv")
    assert list(df.columns[:5]) == ["run", "backbone", "dataset", "variant", "seed"]
    assert list(df["run"]) == ["a_done", "a_done", "c_done"]
    assert list(df["top1_err_pct"]) == [50.0, 40.0, 70.0]
    assert list(df["dataset"]) == ["digits", "digits", "cifar100coarse"]
    assert list(df["seed"]) == [0, 0, 3]
    assert collect(str(tmp_path / "empty"), "exits.csv").empty


def test_remove_tree_is_all_or_nothing(tmp_path):
    """A folder is renamed before it is deleted, so a kill mid-deletion never leaves half of it
    under its name; leftovers of such a kill are cleared by the next call."""
    from elastic_lib.control.results import remove_tree

    d = tmp_path / "resume"
    (d / "phase2").mkdir(parents=True)
    (d / "phase2" / "state.json").write_text("{}")
    leftover = tmp_path / "resume.removing-1-2"
    (leftover / "phase1").mkdir(parents=True)
    remove_tree(str(d))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    remove_tree(str(d))  # nothing there: no error


def test_a_profile_study_is_checked(tmp_path):
    """A profile's ``study`` names a notebook under notebooks/ and carries a parameters mapping;
    anything else is refused when the profile is read, before a run starts."""
    base = {"defaults": {"dataset": "digits", "image_size": 32}, "grid": {"backbone": ["mobilenet_0.75"]}}
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({**base, "study": {"notebook": "aggregate", "parameters": {"x": 1}}}))
    study = profiles.load_profile(str(ok)).study
    assert study["notebook"].endswith("notebooks/aggregate.ipynb") and study["parameters"] == {"x": 1}
    assert profiles.load_profile("smoke").study is None
    for bad, msg in (
        ({"notebook": "no_such_notebook"}, "not found"),
        ({"parameters": {}}, "'notebook'"),
        ({"notebook": "aggregate", "typo": 1}, "'notebook'"),
        ({"notebook": "aggregate", "parameters": [1]}, "mapping"),
    ):
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump({**base, "study": bad}))
        with pytest.raises(config.ConfigError, match=msg):
            profiles.load_profile(str(p))
