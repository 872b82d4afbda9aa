"""Early-exit curves with uncertainty, across runs (seeds) of one configuration, from each run's
stored outputs (``outputs.npz``, ``elastic_lib.early_exit.zoo``):

- **anytime**: test accuracy of every output on its own against its cost;
- **budgeted**: for every policy family, test accuracy against the average test cost when fitted
  on validation to each budget of a grid (a fraction of the final output's cost);
- bands over **seeds** (min to max of the runs) and over **images** (the mean over seeds of each
  run's 95 % percentile bootstrap interval over its test images);
- **paired tests** at equal budgets: a family against the global max-probability threshold, the
  exact McNemar test on the pooled test images of all seeds (each seed's images paired with
  themselves), and the mean accuracy difference with a t interval over seeds.

Protocol: every threshold is fitted on the run's validation split and judged on its test split;
the cost convention is named in every column and axis (``cost_unit``).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from elastic_lib.analysis.stats import mcnemar_exact, t_interval
from elastic_lib.control import results
from elastic_lib.control.config import dataset_label
from elastic_lib.early_exit import zoo
from elastic_lib.early_exit.diagnostics import LEVEL, RESAMPLES
from elastic_lib.early_exit.run_analysis import OUTPUTS_FILE

BUDGETS = tuple(np.round(np.linspace(0.1, 1.0, 19), 3))
REFERENCE = "max_prob"  # the workbook's one global threshold: what the new policies are tested against


def load_runs(run_dirs) -> dict:
    """run name -> (val, test) for the runs that stored their outputs."""
    out = {}
    for d in run_dirs:
        path = os.path.join(d, OUTPUTS_FILE)
        if os.path.isfile(path):
            out[os.path.basename(os.path.normpath(d))] = zoo.load_npz(path)
    return out


def _accuracy_ci(correct: np.ndarray, boot_seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval over test images of the accuracy (the mean of a 0/1 vector),
    with the run diagnostics' resamples and level (``early_exit.diagnostics``)."""
    from scipy.stats import bootstrap

    res = bootstrap(
        (np.asarray(correct, dtype=np.float64),),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(boot_seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def anytime(runs: dict) -> pd.DataFrame:
    """Per run and output: test accuracy (with its image interval) and cost fraction."""
    rows = []
    for run, (_, test) in runs.items():
        for k, name in enumerate(test.names):
            right = test.correct[k]
            lo, hi = _accuracy_ci(right)
            rows.append(
                {
                    "run": run,
                    "output": name,
                    "cost_fraction": float(test.cost[k] / test.cost[-1]),
                    "test_accuracy": float(right.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    return pd.DataFrame(rows)


def budgeted(runs: dict, families=zoo.FAMILIES, budgets=BUDGETS) -> tuple[pd.DataFrame, dict]:
    """Per run, family and budget: the member fitted on validation, its test accuracy (with its
    image interval) and test cost. Also returns the per-image correctness, for paired tests."""
    rows, correct = [], {}
    for run, (val, test) in runs.items():
        for family in families:
            fitted = zoo.fit_budgets(family, val, budgets)
            for budget in budgets:
                policy = fitted[budget]
                if policy is None:
                    continue
                d = policy.decide(test)
                right = d.preds == test.labels
                correct[(run, family, float(budget))] = right
                lo, hi = _accuracy_ci(right)
                out = zoo.outcome(d, test)
                rows.append(
                    {
                        "run": run,
                        "family": family,
                        "budget": float(budget),
                        "test_accuracy": out["accuracy"],
                        "test_cost_fraction": out["cost_fraction"],
                        "ci_low": lo,
                        "ci_high": hi,
                        "params": policy.describe(),
                    }
                )
    return pd.DataFrame(rows), correct


def over_seeds(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean over runs of accuracy and cost, the seed band (min, max) and the image band (mean of
    the runs' intervals)."""
    g = table.groupby(by, sort=False)
    out = g.agg(
        runs=("run", "nunique"),
        test_accuracy=("test_accuracy", "mean"),
        seed_low=("test_accuracy", "min"),
        seed_high=("test_accuracy", "max"),
        image_low=("ci_low", "mean"),
        image_high=("ci_high", "mean"),
        **{c: (c, "mean") for c in ("test_cost_fraction", "cost_fraction") if c in table.columns},
    )
    return out.reset_index()


def paired_tests(table: pd.DataFrame, correct: dict, reference: str = REFERENCE) -> pd.DataFrame:
    """At every budget, every family against ``reference`` on the same test images: the exact
    McNemar test over the images of all runs pooled, and the mean accuracy difference over runs
    with its t interval (points of accuracy)."""
    rows = []
    runs = sorted(table["run"].unique())
    for (family, budget), _ in table.groupby(["family", "budget"], sort=False):
        if family == reference:
            continue
        pairs = [(correct.get((r, family, budget)), correct.get((r, reference, budget))) for r in runs]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if not pairs:
            continue
        b, c, p = mcnemar_exact(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))
        mean, lo, hi = t_interval([100 * (a.mean() - b.mean()) for a, b in pairs])
        rows.append(
            {
                "family": family,
                "reference": reference,
                "budget": budget,
                "runs": len(pairs),
                "diff_points": mean,
                "diff_low": lo,
                "diff_high": hi,
                "only_family_right": b,
                "only_reference_right": c,
                "mcnemar_p": p,
            }
        )
    return pd.DataFrame(rows)


def best_against_single_exits(curves: pd.DataFrame, singles: pd.DataFrame) -> pd.DataFrame:
    """At every single output's cost: the most accurate family whose mean test cost is within it,
    against that output (means over seeds). What the issue's acceptance reads."""
    rows = []
    for _, s in singles.iterrows():
        ok = curves[curves["test_cost_fraction"] <= s["cost_fraction"] + 1e-9]
        if ok.empty:
            continue
        best = ok.sort_values("test_accuracy", ascending=False).iloc[0]
        rows.append(
            {
                "output": s["output"],
                "cost_fraction": s["cost_fraction"],
                "single_accuracy": s["test_accuracy"],
                "best_family": best["family"],
                "best_budget": best["budget"],
                "best_cost_fraction": best["test_cost_fraction"],
                "best_accuracy": best["test_accuracy"],
                "at_least_as_accurate": bool(best["test_accuracy"] >= s["test_accuracy"] - 1e-12),
            }
        )
    return pd.DataFrame(rows)


def figure(curves: pd.DataFrame, singles: pd.DataFrame, cost_unit: str, title: str, caption: str):
    """One panel: each family's budgeted curve (mean over seeds; dark band: images, light band:
    seeds) and every single output (points with their image interval)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        colors = dict(zip(curves["family"].unique(), sns.color_palette("tab10")))
        for family, c in curves.groupby("family", sort=False):
            c = c.sort_values("test_cost_fraction")
            x = c["test_cost_fraction"]
            ax.fill_between(x, 100 * c["seed_low"], 100 * c["seed_high"], color=colors[family], alpha=0.10, lw=0)
            ax.fill_between(x, 100 * c["image_low"], 100 * c["image_high"], color=colors[family], alpha=0.22, lw=0)
            ax.plot(x, 100 * c["test_accuracy"], color=colors[family], lw=1.4, label=family)
        acc = singles["test_accuracy"]
        ax.errorbar(
            singles["cost_fraction"],
            100 * acc,
            yerr=100 * np.vstack([acc - singles["image_low"], singles["image_high"] - acc]),
            fmt="ko",
            ms=3.5,
            lw=0.8,
            capsize=2,
            label="single exits",
        )
        ax.set(
            xlabel=f"average test cost (fraction of the final output's {cost_unit})",
            ylabel="test top-1 accuracy (%)",
            title=title,
        )
        ax.legend(fontsize=7, loc="lower right", ncol=2)
        fig.text(0.01, 0.01, caption, fontsize=6.5, ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def analyse(run_dirs, families=zoo.FAMILIES, budgets=BUDGETS) -> dict | None:
    """Everything above for one configuration's runs (None when none stored its outputs)."""
    runs = load_runs(run_dirs)
    if not runs:
        return None
    first = next(iter(runs.values()))[1]
    unit = first.cost_unit
    # every single output's cost is a budget too: the best policy is judged against each exit at its own cost
    budgets = sorted(set(np.round(budgets, 4)) | set(np.round(first.cost / first.cost[-1], 4)))
    table, correct = budgeted(runs, families, budgets)
    curves = over_seeds(table, ["family", "budget"])
    singles = over_seeds(anytime(runs), ["output"])
    return {
        "runs": sorted(runs),
        "cost_unit": unit,
        "per_run": table,
        "curves": curves,
        "singles": singles,
        "paired": paired_tests(table, correct),
        "versus_single_exits": best_against_single_exits(curves, singles),
    }


CURVES_CAPTION = (
    "Protocol: clean (each run's policies fitted on its validation split, judged once on its test "
    "split); split: test; cost: average cumulative {unit} (staged forward up to the answering output) "
    "as a fraction of the final output's. Line: mean over {n} seed(s); light band: seed min-max; dark "
    "band: 95% bootstrap over test images; dots: single exits with their 95% image interval."
)


def configurations(profile_dir: str) -> dict:
    """(backbone, dataset) -> the completed elastic runs of a profile that stored their outputs."""
    groups: dict = {}
    for run_dir in results.completed_runs(profile_dir):
        if not os.path.isfile(os.path.join(run_dir, OUTPUTS_FILE)):
            continue
        p = results.read_params(run_dir)
        key = (p["backbone"], dataset_label(p["dataset"], p.get("label_mode", "fine")))
        groups.setdefault(key, []).append(run_dir)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def write(profile_dir: str, out_dir: str, fig_dir: str, families=zoo.FAMILIES, budgets=BUDGETS) -> dict:
    """For every configuration whose runs stored their outputs: the curves (``exit_policy_curves.csv``),
    the paired tests (``exit_policy_tests.csv``), the best policy against every single exit
    (``exit_policy_vs_single_exits.csv``), a summary (``exit_policies.md``) and one figure each
    (``exit_policy_curves_<backbone>_<dataset>``). Nothing when no run stored its outputs."""
    import matplotlib.pyplot as plt

    from elastic_lib.analysis import plots

    configs = configurations(profile_dir)
    if not configs:
        return {}
    frames: dict[str, list] = {"curves": [], "paired": [], "versus_single_exits": []}
    lines, figures = ["# Early-exit policies across seeds", ""], []
    for (backbone, dataset), run_dirs in configs.items():
        res = analyse(run_dirs, families, budgets)
        ident = {"backbone": backbone, "dataset": dataset, "cost_unit": res["cost_unit"]}
        for name in frames:
            df = res[name].copy()
            for i, (k, v) in enumerate(ident.items()):
                df.insert(i, k, v)
            frames[name].append(df)
        caption = CURVES_CAPTION.format(unit=res["cost_unit"], n=len(res["runs"]))
        fig = figure(
            res["curves"], res["singles"], res["cost_unit"], f"Early-exit policies: {backbone}, {dataset}", caption
        )
        figures += plots.save(fig, os.path.join(fig_dir, f"exit_policy_curves_{backbone}_{dataset}"))
        plt.close(fig)
        vs = res["versus_single_exits"]
        held = vs[vs["at_least_as_accurate"]]
        missed = vs[~vs["at_least_as_accurate"]]
        lines.append(
            f"- {backbone}, {dataset} ({len(res['runs'])} seed(s)): the most accurate policy within each single "
            f"exit's test cost is at least as accurate as that exit at {len(held)}/{len(vs)} exits"
            + (
                " (not at "
                + ", ".join(
                    f"{r.output}: {100 * r.best_accuracy:.1f} vs {100 * r.single_accuracy:.1f} %"
                    for r in missed.itertuples()
                )
                + ")"
                if len(missed)
                else ""
            )
            + "."
        )
    unit = frames["curves"][0]["cost_unit"].iloc[0]
    lines += ["", CURVES_CAPTION.format(unit=unit, n="the configuration's"), ""]
    lines += [
        "Tables: `exit_policy_curves.csv` (a row per family and budget: mean, seed and image bands), "
        "`exit_policy_tests.csv` (each family against the global max-probability threshold at equal "
        "budgets: exact McNemar on pooled test images, t interval over seeds), "
        "`exit_policy_vs_single_exits.csv`.",
    ]
    written = {}
    for name, file in (
        ("curves", "exit_policy_curves.csv"),
        ("paired", "exit_policy_tests.csv"),
        ("versus_single_exits", "exit_policy_vs_single_exits.csv"),
    ):
        results.write_csv(out_dir, file, pd.concat(frames[name], ignore_index=True))
        written[name] = os.path.join(out_dir, file)
    results.atomic_write_text(os.path.join(out_dir, "exit_policies.md"), "\n".join(lines) + "\n")
    written["summary"] = os.path.join(out_dir, "exit_policies.md")
    written["figures"] = figures
    return written
