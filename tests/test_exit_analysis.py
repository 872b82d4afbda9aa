"""The early-exit analysis inside a run and in the aggregation (Experiment.exit_analysis,
early_exit.run_analysis, analysis.exit_curves.write), on the tiny batch the real driver ran:
what an elastic run stores, that the stored outputs are the run's (its predictions.csv, written
by another path), that a baseline and a run with the analysis off store nothing, and that the
aggregation draws the curves from the stored files alone."""

import os

import numpy as np
import pandas as pd
import pytest
from tiny import BACKBONE

from elastic_lib.control.config import LEGACY, RunConfig, as_recorded
from elastic_lib.early_exit import run_analysis, zoo

ELASTIC, BASELINE = f"{BACKBONE}__digits__elastic", f"{BACKBONE}__digits__baseline"


def _run(tiny_batch, name):
    _, root, _ = tiny_batch
    return os.path.join(root, "results", "tiny", name)


def test_an_elastic_run_stores_every_outputs_probabilities_as_its_predictions_say(tiny_batch):
    run = _run(tiny_batch, ELASTIC)
    val, test = zoo.load_npz(os.path.join(run, "outputs.npz"))
    pred = pd.read_csv(os.path.join(run, "predictions.csv"))
    exits = pd.read_csv(os.path.join(run, "exits.csv"))
    assert list(test.names) == list(exits["output"])
    assert np.array_equal(test.labels, pred["label"].to_numpy())
    for k, name in enumerate(test.names):  # float16 probabilities, exact top-1 classes
        assert np.array_equal(test.preds[k], pred[f"pred_{name}"].to_numpy()), name
        assert np.allclose(test.probs[k].sum(axis=1), 1, atol=5e-3)
        err = 100 * (1 - (test.preds[k] == test.labels).mean())
        assert err == pytest.approx(exits.set_index("output").loc[name, "top1_err_pct"])
    # cost: cumulative kernel MACs as complexity.csv counts them (every head on the way included)
    assert test.cost_unit == "kernel MACs"
    cx = pd.read_csv(os.path.join(run, "complexity.csv"))
    assert np.array_equal(test.cost, cx["kernel_macs_cumulative"].to_numpy(float))
    assert test.cost[-1] >= float(exits["kernel_macs_to_output"].iloc[-1])
    assert val.num_images > 0 and val.num_outputs == test.num_outputs


def test_an_elastic_run_writes_the_policy_zoo_and_diagnostics_and_reports_them(tiny_batch):
    run = _run(tiny_batch, ELASTIC)
    pol = pd.read_csv(os.path.join(run, "exit_policies.csv"))
    assert set(zoo.FAMILIES) | {"risk_controlled"} == set(pol["family"])
    assert set(pol["target"]) == {"budget", "max_drop", f"risk (delta={run_analysis.RISK_DELTA})"}
    ok = pol[pol["status"] == "ok"]
    budget = ok[ok["target"] == "budget"]
    assert (budget["val_cost_fraction"] <= budget["value"] + 1e-9).all()  # fitted within its budget on val
    assert (ok["cost_unit"] == "kernel MACs").all()
    diag = pd.read_csv(os.path.join(run, "exit_diagnostics.csv"))
    assert {"oracle_accuracy", "wasteful", "destructive", "monotonicity_violation", "ece"} <= set(diag["metric"])
    report = open(os.path.join(run, "report.md")).read()
    assert "## Early-exit policies (fitted on validation, judged on test)" in report
    assert "## Early-exit diagnostics" in report


def test_the_stored_outputs_alone_redo_the_runs_policy_table(tiny_batch):
    """What the run wrote is what anyone gets from outputs.npz (no model, no Keras)."""
    run = _run(tiny_batch, ELASTIC)
    val, test = zoo.load_npz(os.path.join(run, "outputs.npz"))
    again = run_analysis.policy_table(val, test, RunConfig().target_drop_pct)
    written = pd.read_csv(os.path.join(run, "exit_policies.csv"))
    cols = ["target", "family", "status", "val_accuracy", "test_accuracy", "test_cost_fraction"]
    pd.testing.assert_frame_equal(
        again[cols].reset_index(drop=True), written[cols].reset_index(drop=True), check_dtype=False
    )


def test_a_baseline_stores_nothing_and_records_the_analysis_off(tiny_batch):
    run = _run(tiny_batch, BASELINE)
    for name in ("outputs.npz", "exit_policies.csv", "exit_diagnostics.csv"):
        assert not os.path.exists(os.path.join(run, name))
    assert RunConfig(variant="baseline").exit_analysis is False
    # a run recorded before the parameter existed is the same run as one with it off
    assert LEGACY["exit_analysis"] is False
    recorded = {"variant": "elastic"}
    assert as_recorded({"variant": "elastic", "exit_analysis": False}, recorded) == recorded


def test_the_aggregation_draws_the_policy_curves_from_the_stored_outputs(tiny_batch):
    _, root, _ = tiny_batch
    tables = os.path.join(root, "results", "tiny")
    summary = open(os.path.join(tables, "exit_policies.md")).read()
    assert f"{BACKBONE}, digits (1 seed(s))" in summary
    assert "Protocol: clean" in summary and "kernel MACs" in summary
    curves = pd.read_csv(os.path.join(tables, "exit_policy_curves.csv"))
    assert {"max_prob", "per_exit"} <= set(curves["family"]) <= set(zoo.FAMILIES)
    vs = pd.read_csv(os.path.join(tables, "exit_policy_vs_single_exits.csv"))
    assert len(vs) >= 1 and vs["cost_unit"].eq("kernel MACs").all()
    assert os.path.isfile(os.path.join(root, "figures", "tiny", f"exit_policy_curves_{BACKBONE}_digits.png"))
