"""One 224-px pair of the paper-dryrun profile through the real driver (the paper's recipe and
both protocols end to end), checked against the committed results/paper-dryrun run directories:
the model (taps, params, kernel MACs) exactly; the recipe in params.yaml; the protocol columns."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from elastic_lib.control.paths import ROOT

pytestmark = pytest.mark.slow  # trains the pair at 224 px
PAIR = "mobilenet_0.75__cifar10_"
COMMITTED = f"{ROOT}/results/paper-dryrun"


@pytest.fixture(scope="module")
def pair(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("dryrun")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "elastic_lib.control.batch",
            "--profile",
            "paper-dryrun",
            "--only",
            PAIR,
            "--data-dir",
            str(shared_data),
            "--results-root",
            str(root / "results"),
            "--figures-root",
            str(root / "figures"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "results" / "paper-dryrun"


@pytest.mark.parametrize("variant", ["elastic", "baseline"])
def test_dryrun_pair_matches_the_committed_model_and_recipe(pair, variant):
    name = f"mobilenet_0.75__cifar10__{variant}"
    d = pair / name
    assert (d / "DONE").exists()
    pd.testing.assert_frame_equal(pd.read_csv(d / "complexity.csv"), pd.read_csv(f"{COMMITTED}/{name}/complexity.csv"))
    p = yaml.safe_load((d / "params.yaml").read_text())["parameters"]
    assert (
        p["image_size"],
        p["preprocess"],
        p["frozen_bn"],
        p["phase2_momentum"],
        p["reduce_lr_cooldown"],
        p["early_stopping_min_delta"],
        p["final_head"],
    ) == (224, "inception", "batch_stats", 0.0, 1, 1e-4, "flatten")
    exits = pd.read_csv(d / "exits.csv")
    assert len(exits) == (14 if variant == "elastic" else 1) and exits["paper_protocol_top1_err_pct"].notna().all()
    th = pd.read_csv(d / "test_history.csv")
    assert len(th) == len(exits) and set(th["phase"]) == {2}  # one phase-2 epoch, every output
    s = pd.read_csv(d / "summary.csv", keep_default_na=False).iloc[0]
    assert s["paper_protocol_output"] in ("final", "exit13") and s["clean_protocol_output"] in ("final", "exit13")
    assert s["epochs_run"] == 2 and s["resumed_from"] == ""
