"""Figure 10: the early-exit policy zoo on trained runs, and a latency budget met on the exported model.

Runs: the cifar-mini Elastic-MobileNet-0.75 CIFAR-100 runs, seeds 0-2 (and CIFAR-10 seed 0), found
with their weights under ``results/interactive/cifar-mini/`` (where ``./run_all.sh --profile
cifar-mini --results-root results/interactive --only ...`` trains them on this machine) or
``results/cifar-mini/``. For each: every output's validation and test probabilities, as the run
stored them (``outputs.npz``; predicted again from the weights for a run made before runs stored
them), then

- **the zoo** (``elastic_lib.analysis.exit_curves``): every policy family fitted on validation at 19
  budgets (0.1 to 1.0 of the final output's kernel MACs), judged on test; curves with seed and
  image bands (figure ``benchmarks/figures/early_exit_zoo_<config>.png``); each family against the
  global threshold at equal budgets (McNemar on pooled test images, t interval over seeds); the
  most accurate policy within each single exit's cost against that exit;
- **risk control**: the Learn-then-Test threshold at eps 0.01, 0.02, 0.05 (delta 0.1): its test
  accuracy drop against the final output;
- **latency budget** (seed 0, CIFAR-100): the run's model as a TensorFlow Lite cascade
  (``serving.TFLiteCascade``, batch 1, XNNPACK); each output's cumulative latency measured by
  stopping every image there (mean over images and repeats, the statistic of the realised latency),
  the costs of ``zoo.with_cost``; per-exit
  thresholds fitted on validation to budgets of 40, 60 and 80 % of the final output's latency; the
  cascade then runs the test images with those thresholds, timed per image. Target: the realised
  mean latency meets the budget (at most 10 % over it) and is within 10 % of what the measured
  per-output latencies predict for the policy on test (the latency model holds). A policy may
  spend less than its budget: where accuracy no longer grows with cost, the most accurate policy
  within the budget is a cheaper one.
"""

from __future__ import annotations

import os
import time

import numpy as np

from elastic_lib.control.results import repo_relative

from .common import ROOT, clear_keras, fmt, log, trained_run

CONFIGS = {
    "cifar100": [f"cifar-mini/mobilenet_0.75__cifar100__elastic__seed{s}" for s in range(3)],
    "cifar10": ["cifar-mini/mobilenet_0.75__cifar10__elastic__seed0"],
}
FIG_DIR = os.path.join(ROOT, "benchmarks", "figures")
LATENCY_BUDGETS = (0.4, 0.6, 0.8)
LATENCY_TOLERANCE = 0.10
RISK_EPS, RISK_DELTA = (0.01, 0.02, 0.05), 0.1


def store_outputs(run_dir: str):
    """(experiment, val, test): the run reloaded, and its outputs' probabilities as the run stored
    them (``outputs.npz``, written by runs since the policy zoo is in the notebook), else
    predicted again by the reloaded model (kept in memory: nothing is written into the run)."""
    from elastic_lib.early_exit import run_analysis, zoo
    from elastic_lib.experiment import Experiment
    from elastic_lib.models.exits import predict_outputs, short_output_names

    exp = Experiment.from_run_dir(run_dir)
    path = os.path.join(run_dir, run_analysis.OUTPUTS_FILE)
    if os.path.isfile(path):
        val, test = zoo.load_npz(path)
        return exp, val, test
    names = short_output_names(exp.model)
    splits = []
    for split in ("val", "test"):
        probs, labels = predict_outputs(exp.model, exp.pipeline(split), getattr(exp.splits, f"y_{split}"))
        splits.append((probs, labels))
    val, test = run_analysis.stored_outputs(splits[0], splits[1], exp.costs, names)
    return exp, val, test


def _cascade_time(cascade, x, thresholds) -> tuple[float, int]:
    """(seconds, exit index) of one image through the cascade with per-exit confidence thresholds."""
    t0 = time.perf_counter()
    h = x
    for i, stage in enumerate(cascade.stages):
        h, p = stage(h)
        if p.max() >= thresholds[i]:
            return time.perf_counter() - t0, i
    cascade.tail(h)
    return time.perf_counter() - t0, cascade.n_exits


def latency_budget(exp, val, test, images: int, repeats: int) -> list[dict]:
    from elastic_lib.early_exit import zoo
    from elastic_lib.early_exit.serving import TFLiteCascade
    from elastic_lib.early_exit.staged import to_numpy

    cascade = TFLiteCascade(exp.model, "max_prob", threads=1)
    k = cascade.n_exits + 1
    tx = np.concatenate([np.asarray(to_numpy(xb), dtype=np.float32) for xb, _ in exp.pipeline("test")])
    x, n = tx, min(images, len(tx))
    per_exit = []
    for stop in range(k):  # every image stops at output `stop`: its cumulative latency
        forced = np.full(k, np.inf)
        forced[stop:] = -np.inf
        times = [_cascade_time(cascade, x[i : i + 1], forced)[0] for _ in range(repeats) for i in range(n)]
        per_exit.append(1000 * float(np.mean(times)))  # a mean, as the realised latency below is
    ms = np.maximum.accumulate(np.asarray(per_exit))  # cumulative cost (timing noise can dip)
    unit = "ms (TFLite cascade, batch 1, 1 thread)"
    val_ms, test_ms = zoo.with_cost(val, ms, unit), zoo.with_cost(test, ms, unit)
    rows = []
    for frac in LATENCY_BUDGETS:
        budget_ms = frac * ms[-1]
        policy = zoo.fit("per_exit", val_ms, budget=frac)
        predicted = zoo.outcome(policy.decide(test_ms), test_ms)
        t = np.asarray(policy.params["thresholds"], dtype=np.float64)
        realised = [_cascade_time(cascade, tx[i : i + 1], t) for i in range(len(tx))]
        mean_ms = 1000 * float(np.mean([r[0] for r in realised]))
        rows.append(
            {
                "run": repo_relative(exp.cfg.output_dir),
                "budget_fraction": frac,
                "budget_ms": budget_ms,
                "final_ms": float(ms[-1]),
                "per_exit_ms": [round(v, 4) for v in ms],
                "predicted_test_ms": predicted["mean_cost"],
                "realised_test_ms": mean_ms,
                "realised_over_budget": mean_ms / budget_ms,
                "realised_over_predicted": mean_ms / predicted["mean_cost"],
                "test_accuracy": predicted["accuracy"],
                "within_tolerance": bool(
                    mean_ms <= budget_ms * (1 + LATENCY_TOLERANCE)
                    and abs(mean_ms / predicted["mean_cost"] - 1) <= LATENCY_TOLERANCE
                ),
            }
        )
    del cascade
    return rows


def run(quick: bool = False) -> dict:
    from elastic_lib.analysis import exit_curves, plots
    from elastic_lib.early_exit import zoo

    found = {c: [r for r in (trained_run(rel) for rel in rels) if r] for c, rels in CONFIGS.items()}
    if not any(found.values()):
        raise FileNotFoundError(
            "no trained cifar-mini elastic run with its weights: ./run_all.sh --profile cifar-mini "
            "--results-root results/interactive --only 'cifar100__elastic'"
        )
    rows, verdicts, ok = [], [], True
    for config, runs in found.items():
        if not runs:
            continue
        stored = {}
        for r in runs:
            log(f"early-exit zoo: {repo_relative(r)}")
            stored[r] = store_outputs(r)
            clear_keras()
        res = exit_curves.analyse(runs, budgets=exit_curves.BUDGETS[::3] if quick else exit_curves.BUDGETS)
        caption = (
            f"{len(runs)} run(s) ({config}, cifar-mini); thresholds fitted on each run's validation split, "
            "accuracy on its test split; cost: cumulative kernel MACs (staged forward: prefix and every head "
            "on the way). Line: mean over seeds; light band: seed min-max; dark band: 95% bootstrap over test images."
        )
        fig = exit_curves.figure(res["curves"], res["singles"], res["cost_unit"], f"Policy zoo: {config}", caption)
        plots.save(fig, os.path.join(FIG_DIR, f"early_exit_zoo_{config}"))
        plots.plt.close(fig)
        vs = res["versus_single_exits"]
        beaten = vs[~vs["at_least_as_accurate"]]
        held = int(vs["at_least_as_accurate"].sum())
        verdicts.append(
            f"{config}: the best policy is at least as accurate as the single exit at {held}/{len(vs)} exits' costs"
            + (f" (not at {', '.join(beaten['output'])})" if len(beaten) else "")
        )
        rows += [{"config": config, "table": "versus_single_exits", **r} for r in vs.to_dict("records")]
        paired = res["paired"]
        rows += [{"config": config, "table": "paired_vs_max_prob", **r} for r in paired.to_dict("records")]
        for run_dir, (_, val, test) in stored.items():
            for eps in RISK_EPS:
                p = zoo.risk_controlled(val, eps, RISK_DELTA)
                d = zoo.outcome(p.decide(test), test)
                drop = float(test.correct[-1].mean()) - d["accuracy"]
                rows.append(
                    {
                        "config": config,
                        "table": "risk_controlled",
                        "run": repo_relative(run_dir),
                        "eps": eps,
                        "delta": RISK_DELTA,
                        "threshold": p.params["threshold"],
                        "test_accuracy_drop": drop,
                        "test_cost_fraction": d["cost_fraction"],
                        "drop_within_eps": bool(drop <= eps),
                    }
                )
        if config == "cifar100":
            exp, val, test = stored[runs[0]]
            lat = latency_budget(exp, val, test, images=30 if quick else 100, repeats=1 if quick else 3)
            rows += [{"config": config, "table": "latency_budget", **r} for r in lat]
            ok &= all(r["within_tolerance"] for r in lat)
            verdicts.append(
                "latency budget (realised/budget, realised/predicted from the measured per-output latencies): "
                + ", ".join(
                    f"{fmt(r['realised_over_budget'], 3)} and {fmt(r['realised_over_predicted'], 3)} at "
                    f"{r['budget_fraction']:g}"
                    for r in lat
                )
            )
            clear_keras()
    return {
        "figure": "10. The early-exit policy zoo on trained runs; a latency budget on the TFLite cascade",
        "data": ", ".join(repo_relative(r) for runs in found.values() for r in runs),
        "rows": rows,
        "measured": "; ".join(verdicts)[:44],
        "target": f"latency within {LATENCY_TOLERANCE:.0%} of budget",
        "pass": ok,
        "verdict": ("PASS" if ok else "FAIL") + ": " + "; ".join(verdicts),
        "notes": [],
    }


if __name__ == "__main__":
    from .common import standalone

    standalone(run)
