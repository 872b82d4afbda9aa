"""Figure 7: the early-exit policies a deployer asks for (issue 10), on trained runs.

For each trained elastic run found with its weights (the smoke MobileNet-0.75 on digits, the
cifar-mini MobileNet-0.75 runs on CIFAR-10 and CIFAR-100, seed 0; ``common.trained_run``: this
machine's copy under ``results/interactive/`` first), reloaded with
``Experiment.from_run_dir``: every output's probabilities on its validation and test splits,
then (``elastic_lib.early_exit.policies``)

- the **budgeted policy** at average budgets of 0.25, 0.5, 0.75 and 1.0 of the final output's
  kernel MACs: threshold chosen on validation (best validation accuracy within the budget),
  test accuracy and the cost it really spends on test;
- **calibration**: every output's expected calibration error on test, before and after a
  temperature fitted on validation; and the test accuracy-vs-cost curve of the max-prob policy
  with and without those temperatures (figure ``benchmarks/figures/early_exit_policies_<run>.png``).

Target: the budget is met on test (realised cost <= budget + 0.02) at every budget; the
calibration and the curve shift are reported, not judged.
"""

from __future__ import annotations

import os

import numpy as np

from elastic_lib.control.results import repo_relative

from .common import ROOT, clear_keras, fmt, log, trained_run

RUNS = (
    "smoke/mobilenet_0.75__digits__elastic",
    "cifar-mini/mobilenet_0.75__cifar10__elastic__seed0",
    "cifar-mini/mobilenet_0.75__cifar100__elastic__seed0",
)
TOLERANCE = 0.02
FIG_DIR = os.path.join(ROOT, "benchmarks", "figures")


def _probs(run_dir: str):
    from elastic_lib.experiment import Experiment
    from elastic_lib.models.exits import predict_outputs, short_output_names

    exp = Experiment.from_run_dir(run_dir)
    val, test = (predict_outputs(exp.model, exp.pipeline(s), getattr(exp.splits, f"y_{s}")) for s in ("val", "test"))
    return val, test, exp.costs, short_output_names(exp.model)


def one_run(run_dir: str) -> tuple[list[dict], dict]:
    from elastic_lib.analysis import plots
    from elastic_lib.early_exit import policies

    val, test, costs, names = _probs(run_dir)
    budgets = policies.budget_table(val, test, costs)
    calib, temps = policies.calibration_table(val, test, names)
    curves = policies.cost_curves(test, costs, temps)
    auc = {
        label: float(
            np.trapezoid(g.sort_values("cost_fraction")["accuracy"], g.sort_values("cost_fraction")["cost_fraction"])
        )
        for label, g in curves.groupby("probabilities")
    }
    name = os.path.basename(run_dir)
    fig = policies.cost_curves_figure(curves, budgets, title=f"{name}: max-prob policy on test")
    os.makedirs(FIG_DIR, exist_ok=True)
    plots.save(fig, os.path.join(FIG_DIR, f"early_exit_policies_{name}"))
    plots.plt.close(fig)
    rows = [
        {
            "run": repo_relative(run_dir),
            "budget": r["budget"],
            "threshold": r["threshold"],
            "val_cost_fraction": r["val_cost_fraction"],
            "test_cost_fraction": r["test_cost_fraction"],
            "test_accuracy": r["test_accuracy"],
            "final_test_accuracy": 1 - float(np.mean(test[0][-1].argmax(1) != test[1])),
            "budget_met_on_test": bool(r["test_cost_fraction"] <= r["budget"] + TOLERANCE),
        }
        for _, r in budgets.iterrows()
    ]
    cal = {
        "run": repo_relative(run_dir),
        "mean_test_ece": float(calib["test_ece"].mean()),
        "mean_test_ece_calibrated": float(calib["test_ece_calibrated"].mean()),
        "final_ece": float(calib["test_ece"].iloc[-1]),
        "final_ece_calibrated": float(calib["test_ece_calibrated"].iloc[-1]),
        "temperatures": [round(t, 3) for t in temps],
        "area_accuracy_vs_cost_as_trained": auc.get("as trained"),
        "area_accuracy_vs_cost_temperature_scaled": auc.get("temperature-scaled"),
    }
    clear_keras()
    return rows, cal


def run(quick: bool = False) -> dict:
    runs = [r for r in (trained_run(rel) for rel in RUNS[: 1 if quick else None]) if r]
    if not runs:
        raise FileNotFoundError("no trained run with weights among " + ", ".join(RUNS) + ": run ./run_all.sh first")
    rows, cals = [], []
    for r in runs:
        log(f"early-exit policies: {repo_relative(r)}")
        b, c = one_run(r)
        rows += b
        cals.append(c)
    ok = all(r["budget_met_on_test"] for r in rows)
    text = "; ".join(
        f"{r['run'].split('/')[-1]} budget {r['budget']:g}: test cost {fmt(r['test_cost_fraction'])}, "
        f"accuracy {fmt(r['test_accuracy'])} (final {fmt(r['final_test_accuracy'])})"
        for r in rows
    )
    cal_text = "; ".join(
        f"{c['run'].split('/')[-1]}: mean ECE {fmt(c['mean_test_ece'])} -> "
        f"{fmt(c['mean_test_ece_calibrated'])} with temperatures, area under accuracy-vs-cost "
        f"{fmt(c['area_accuracy_vs_cost_as_trained'])} -> {fmt(c['area_accuracy_vs_cost_temperature_scaled'])}"
        for c in cals
    )
    return {
        "figure": "7. Budgeted early exit and per-exit calibration (trained runs)",
        "data": ", ".join(repo_relative(r) for r in runs),
        "rows": rows + cals,
        "measured": f"budgets met on test: {sum(r['budget_met_on_test'] for r in rows)}/{len(rows)}",
        "target": f"test cost <= budget + {TOLERANCE}",
        "pass": ok,
        "verdict": ("PASS" if ok else "FAIL") + f": {text}. Calibration: {cal_text}.",
        "notes": [],
    }


if __name__ == "__main__":
    from .common import standalone

    standalone(run)
