"""run_all.sh's driver: bad input refused early, failures recorded, kills and locks lose nothing."""

import fcntl
import os

import pytest
import yaml
from tiny import BACKBONE, ROOT, run_batch, write_profile

from elastic_lib.control import batch
from elastic_lib.control.config import ConfigError

# timing columns legitimately differ between runs; everything else must be identical
VOLATILE = ("latency", "train_s")


def test_undeclared_notebook_parameter_is_refused():
    with pytest.raises(ConfigError, match="not declared"):
        batch.check_parameters(batch.TEMPLATE, {"backbone": "vgg16", "epochs": 3})


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"grid": {"backbone": ["vgg16"]}, "defaults": {"epochs": 2}}, "unknown parameter"),
        ({"grid": {"backbone": ["vgg16"]}, "defaults": {"image_size": "32"}}, "image_size"),
        ({"grid": {"backbone": ["vgg16"]}, "gird": {}}, "unknown key"),
        ({"grid": {"backbone": ["vgg17"]}}, "unknown backbone"),
        ({"grid": {"backbone": ["inception_v3"]}, "defaults": {"image_size": 32}}, "minimum input size 75"),
    ],
)
def test_bad_profile_exits_2_before_running(tmp_path, spec, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = run_batch(str(path), tmp_path)
    assert out.returncode == 2
    assert match in out.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_profile_lists_valid_ones(tmp_path):
    out = run_batch("no-such-profile", tmp_path)
    assert out.returncode == 2 and "smoke" in out.stderr


@pytest.mark.slow
def test_failures_are_recorded_and_the_batch_goes_on(tmp_path):
    """A diverging run is FAILED with its reason; the next run is still attempted (here it is
    locked by 'another run_all.sh' and refused without being touched)."""
    profile = write_profile(tmp_path, "fail", overrides={f"{BACKBONE}__digits__elastic": {"learning_rate": 1e30}})
    locked_dir = tmp_path / "results" / "fail" / f"{BACKBONE}__digits__baseline"
    locked_dir.mkdir(parents=True)
    (locked_dir / "history.csv").write_text("sentinel\n")
    fd = os.open(locked_dir / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        out = run_batch(profile, tmp_path)
    finally:
        os.close(fd)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "2 failure(s)" in out.stdout
    assert "TrainingDiverged" in out.stdout
    assert "locked" in out.stdout
    failed = tmp_path / "results" / "fail" / f"{BACKBONE}__digits__elastic"
    assert (failed / "FAILED").exists() and not (failed / "DONE").exists()
    assert (locked_dir / "history.csv").read_text() == "sentinel\n"


def test_aggregate_only_tables_and_figures_of_completed_runs(tmp_path):
    """What slurm/aggregate.sbatch runs after the array job: the aggregation alone, into the
    profile's folders (here copies), the run directories untouched."""
    import shutil

    shutil.copytree(
        ROOT / "results" / "smoke",
        tmp_path / "results" / "smoke",
        ignore=shutil.ignore_patterns("table_error_flops*", "aggregate.ipynb", "reproducibility"),
    )
    runs_before = {p: p.read_bytes() for p in (tmp_path / "results" / "smoke").rglob("*") if p.is_file()}
    out = run_batch("smoke", tmp_path, "--aggregate-only")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "results" / "smoke" / "table_error_flops.md").is_file()
    assert (tmp_path / "results" / "smoke" / "aggregate.ipynb").is_file()
    assert sorted(p.name for p in (tmp_path / "figures" / "smoke").glob("*.png")) == sorted(
        p.name for p in (ROOT / "figures" / "smoke").glob("*.png")
    )
    assert all(p.read_bytes() == b for p, b in runs_before.items())


def test_aggregate_only_without_completed_runs_says_so(tmp_path):
    out = run_batch("smoke", tmp_path, "--aggregate-only")
    assert out.returncode == 1 and "no completed run of profile 'smoke'" in out.stdout
