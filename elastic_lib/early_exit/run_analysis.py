"""One run's early-exit analysis: its outputs stored once, the policy zoo fitted at the run's
targets, and the diagnostics, as tables and as the Markdown section of ``report.md``.

Everything here reads stored probabilities (``zoo.ExitOutputs``), never the model, so it runs the
same on every Keras backend and can be redone from a run's ``outputs.npz`` alone::

    val, test = zoo.load_npz("results/<profile>/<run>/outputs.npz")
    res = run_analysis.analyse(val, test, target_drop_pct=1.0)

Targets (validation picks, test judges):

- ``BUDGETS``: average cost at most a quarter, half, three quarters of the final output's (MSDNet's
  budgeted batch classification), every family of ``zoo.FAMILIES``;
- ``max_drop``: the run's ``target_drop_pct`` (accuracy points below the final output on
  validation), every family;
- ``risk_controlled``: drop against the final output at most ``target_drop_pct`` with probability
  at least ``1 - RISK_DELTA`` over the validation draw (``zoo.risk_controlled``).

Each row names the cost convention (``cost_unit``) and the split of every number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from elastic_lib.early_exit import diagnostics, zoo

BUDGETS = (0.25, 0.5, 0.75)
RISK_DELTA = 0.1
COST_COLUMN = "kernel_macs_cumulative"  # the staged forward up to and including an output's head
COST_UNIT = "kernel MACs"
OUTPUTS_FILE = "outputs.npz"


def stored_outputs(val: tuple, test: tuple, costs: pd.DataFrame, names) -> tuple[zoo.ExitOutputs, zoo.ExitOutputs]:
    """(val, test) ``ExitOutputs`` from per-output probability lists and labels (``(probs, y)`` each)
    and the model's complexity frame (cumulative kernel MACs: the original code's convention)."""
    cost = costs[COST_COLUMN].to_numpy(np.float64)
    return tuple(zoo.ExitOutputs(np.stack(p), y, cost, tuple(names), COST_UNIT) for p, y in (val, test))


def policy_table(val: zoo.ExitOutputs, test: zoo.ExitOutputs, target_drop_pct: float) -> pd.DataFrame:
    """Every family at ``BUDGETS`` and at the accuracy-drop target, then the risk-controlled
    threshold; a row per family and target (``zoo.compare_at_budgets``'s columns)."""
    eps = target_drop_pct / 100
    table = zoo.compare_at_budgets(val, test, BUDGETS, max_drops=(eps,))
    rc = zoo.risk_controlled(val, eps=eps, delta=RISK_DELTA)
    v, t = zoo.outcome(rc.decide(val), val), zoo.outcome(rc.decide(test), test)
    row = {
        "target": f"risk (delta={RISK_DELTA})",
        "value": eps,
        "family": "risk_controlled",
        "status": "ok",
        "params": rc.describe(),
        "val_accuracy": v["accuracy"],
        "val_cost_fraction": v["cost_fraction"],
        "test_accuracy": t["accuracy"],
        "test_cost_fraction": t["cost_fraction"],
        "test_mean_exit": t["mean_exit"],
    }
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table["test_drop_vs_final_pct"] = 100 * (float(test.correct[-1].mean()) - table["test_accuracy"])
    table.insert(3, "cost_unit", test.cost_unit)
    return table


def analyse(
    val: zoo.ExitOutputs, test: zoo.ExitOutputs, target_drop_pct: float, class_names=None, boot_seed: int = 0
) -> dict:
    """``policies`` (``policy_table``), ``diagnostics`` (``diagnostics.diagnostics_table``: oracle,
    overthinking, monotonicity, calibration, with bootstrap intervals over test images) and
    ``class_exit_rates`` of the per-exit policy fitted to the accuracy-drop target (the global
    threshold's when no per-exit member meets it)."""
    policies = policy_table(val, test, target_drop_pct)
    diag = diagnostics.diagnostics_table(val, test, boot_seed=boot_seed)
    eps = target_drop_pct / 100
    policy = zoo.fit("per_exit", val, max_drop=eps) or zoo.fit("max_prob", val, max_drop=eps)
    rates = pd.DataFrame()
    if policy is not None:
        rates = diagnostics.class_exit_rates(policy.decide(test), test, class_names)
        rates.insert(0, "policy", f"{policy.family}: {policy.describe()}")
    return {
        "policies": policies,
        "diagnostics": diag,
        "class_exit_rates": rates,
        "cost_unit": test.cost_unit,
        "names": test.names,
    }


def _pct(x: float) -> str:
    return "" if pd.isna(x) else f"{100 * x:.1f}"


def markdown(res: dict, target_drop_pct: float) -> str:
    """The ``report.md`` section: the best policy per target, and the diagnostics that matter most."""
    pol, diag = res["policies"], res["diagnostics"]
    ok = pol[pol["status"] == "ok"]
    lines = [
        "## Early-exit policies (fitted on validation, judged on test)",
        "",
        f"Cost: cumulative {res['cost_unit']} (staged forward up to the output that answers), as a "
        f"fraction of the final output's. Targets: average validation cost within a budget, or at most "
        f"{target_drop_pct:g} points below the final output on validation; risk-controlled: that drop "
        f"with probability at least {1 - RISK_DELTA:g} (Learn then Test). All rows: `exit_policies.csv`.",
        "",
        "| target | best family on validation | parameters | test top-1 acc (%) | test cost fraction |",
        "|---|---|---|---|---|",
    ]
    for (target, value), group in ok.groupby(["target", "value"], sort=False):
        best = group.sort_values(["val_accuracy", "val_cost_fraction"], ascending=[False, True]).iloc[0]
        if target == "max_drop":
            best = group.sort_values(["val_cost_fraction", "val_accuracy"], ascending=[True, False]).iloc[0]
        label = {"budget": f"cost <= {value:g}", "max_drop": f"drop <= {100 * value:g} pts"}.get(
            target, f"drop <= {100 * value:g} pts, p >= {1 - RISK_DELTA:g}"
        )
        lines.append(
            f"| {label} | {best['family']} | {best['params']} | {_pct(best['test_accuracy'])} | "
            f"{best['test_cost_fraction']:.3f} |"
        )
    d = diag.set_index(["metric", "output"])

    def cell(metric, output="any"):
        r = d.loc[(metric, output)]
        return f"{_pct(r['value'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"

    ece = diag[diag["metric"].isin(["ece", "ece_temperature_scaled"])].pivot(
        index="output", columns="metric", values="value"
    )
    lines += [
        "",
        "## Early-exit diagnostics (test split, 95% bootstrap intervals over test images)",
        "",
        f"- Oracle exit (each image at its earliest correct output; no policy can do better with these "
        f"outputs): top-1 accuracy {cell('oracle_accuracy')} %, cost fraction "
        f"{d.loc[('oracle_cost_fraction', 'any'), 'value']:.3f}.",
        f"- Overthinking (SDN): images some early output gets right that the final output also gets right "
        f"(wasteful) {cell('wasteful', 'any early')} %, that the final output gets wrong (destructive) "
        f"{cell('destructive', 'any early')} %.",
        "- Monotonicity: images the anytime prediction loses at least once "
        f"{cell('monotonicity_violation', 'any step')} %.",
        "- Calibration: expected calibration error (%, 15 bins) per output before -> after temperature "
        "scaling fitted on validation: "
        + ", ".join(
            f"{o} {_pct(r['ece'])} -> {_pct(r['ece_temperature_scaled'])}"
            for o, r in ece.reindex(list(res["names"])).dropna().iterrows()
        )
        + ".",
        "",
        "Per output and step: `exit_diagnostics.csv`; per-class exit rates: `class_exit_rates.csv`.",
    ]
    return "\n".join(lines) + "\n"
