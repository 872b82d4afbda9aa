"""Turn a profile's run directories into the paper-style table and the profile's figures."""
from __future__ import annotations

import os

import pandas as pd

from . import plots, results
from .config import ROOT, interactive_dir

METRICS = [("final_top1_err_pct", "err_final"), ("best_top1_err_pct", "err_best_output"),
           ("min_exit_top1_err_pct", "err_min_output_test"),
           ("final_top5_err_pct", "top5_err_final"), ("final_macro_f1", "macro_f1_final"), ("final_loss", "loss_final")]
MODEL_COLS = [("final_kernel_macs", "kernel_macs_final"), ("final_flops", "flops_final"),
              ("total_params", "total_params"), ("trainable_params", "trainable_params"),
              ("non_trainable_params", "non_trainable_params"), ("final_latency_ms", "latency_ms_final")]


def reference_dir() -> str:
    return os.path.join(ROOT, "results", "reference")


def paper_errors() -> pd.DataFrame:
    """Table I of the paper (results/reference/paper_table1.csv), one row per backbone and
    dataset; ResNet50's elastic number is the 'exits after all 16 residual blocks' row."""
    ref = pd.read_csv(os.path.join(reference_dir(), "paper_table1.csv"))
    ref = ref[~ref["note"].fillna("").str.contains("ResNet-50-5")]
    long = pd.concat([ref.assign(variant="baseline", paper_err_pct=ref["baseline_error_pct"]),
                      ref.assign(variant="elastic", paper_err_pct=ref["elastic_error_pct"])])
    return long[["backbone", "dataset", "variant", "paper_err_pct"]]


def long_table(profile_dir: str) -> pd.DataFrame:
    """One row per model x dataset: mean and std over seeds of every metric, plus the paper."""
    summary = results.collect(profile_dir, "summary.csv")
    if summary.empty:
        return summary
    keys = ["backbone", "variant", "dataset"]
    cols = [c for c, _ in METRICS + MODEL_COLS]
    g = summary.groupby(keys, sort=True)
    mean = g[cols].mean().rename(columns={c: f"{n}_mean" for c, n in METRICS + MODEL_COLS})
    std = g[[c for c, _ in METRICS]].std(ddof=1).rename(columns={c: f"{n}_std" for c, n in METRICS})
    out = mean.join(std).join(g.size().rename("n_seeds")).reset_index()
    out = out.merge(paper_errors(), on=keys, how="left")
    out.insert(0, "model", [plots.model_label(b, v) for b, v in zip(out["backbone"], out["variant"])])
    return out.sort_values(["backbone", "variant", "dataset"], kind="stable").reset_index(drop=True)


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per model, columns per dataset."""
    value_cols = [c for c in long.columns if c not in ("model", "backbone", "variant", "dataset")]
    wide = long.pivot(index=["model", "backbone", "variant"], columns="dataset", values=value_cols)
    wide.columns = [f"{ds}__{col}" for col, ds in wide.columns]
    wide = wide[sorted(wide.columns, key=lambda c: (c.split("__")[0], value_cols.index(c.split("__")[1])))]
    return wide.reset_index().sort_values(["backbone", "variant"], kind="stable").reset_index(drop=True)


def _pm(mean, std) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def markdown_table(long: pd.DataFrame, convention: str = "kernel_macs") -> str:
    """Markdown version of the table (generated, never typed): error columns per dataset, then
    cost of the final output (FLOPs under ``convention``) and params."""
    datasets = sorted(long["dataset"].unique())
    rows = []
    for model, d in long.groupby("model", sort=False):
        d = d.set_index("dataset")
        row = {"model": model}
        for ds in datasets:
            r = d.loc[ds] if ds in d.index else None
            cells = {"err final (%)": ("err_final", None), "err best output, val-selected (%)": ("err_best_output", None),
                     "err best output, test-selected as in the paper (%)": ("err_min_output_test", None),
                     "top-5 err (%)": ("top5_err_final", None), "macro-F1": ("macro_f1_final", ".4f"),
                     "loss": ("loss_final", ".4f")}
            for head, (key, fmt) in cells.items():
                row[f"{ds} {head}"] = ("" if r is None else
                                       _pm(r[f"{key}_mean"], r[f"{key}_std"]) if fmt is None else
                                       format(r[f"{key}_mean"], fmt))
            row[f"{ds} paper err (%)"] = "" if r is None or pd.isna(r["paper_err_pct"]) else f"{r['paper_err_pct']:.2f}"
        first = d.iloc[0]
        row[f"FLOPs final ({convention}, {datasets[0]})"] = f"{first[f'{convention}_final_mean'] / 1e6:.2f}M"
        for col, name in (("total_params", "params total"), ("trainable_params", "trainable"),
                          ("non_trainable_params", "non-trainable")):
            row[name] = f"{int(first[f'{col}_mean']):,}"
        row["seeds"] = str(int(first["n_seeds"]))
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def machine_caption(profile_dir: str) -> str:
    """Which machine(s) made the numbers; trained numbers move across CPUs (README, Reproducibility)."""
    names = results.machines(profile_dir)
    return (f"Trained on: {'; '.join(names)}. Trained numbers are bit-identical only on the same machine "
            "(same oneDNN ISA, threads, seed); across CPUs they move within the measured tolerances of "
            "`results/smoke/reproducibility/tolerances.csv` (README, Reproducibility).\n")


def same_depth(profile_dir: str, summary: pd.DataFrame) -> pd.DataFrame:
    """Paper Fig. 6 rows: a complete network vs. an elastic exit of the same depth."""
    sd = results.collect(profile_dir, "same_depth.csv")
    if sd.empty:
        return sd
    rows = []
    for _, r in sd.iterrows():
        full = summary[(summary["backbone"] == r["compare_to"]) & (summary["dataset"] == r["dataset"])
                       & (summary["variant"] == "baseline")]
        rows.append({"dataset": r["dataset"], "label": f"{plots.model_label(r['backbone'])} {r['output']} "
                     f"(depth {r['depth_layers']})", "top1_err_pct": r["top1_err_pct"], "seed": r["seed"]})
        if not full.empty:
            rows.append({"dataset": r["dataset"], "label": f"{r['compare_to']} complete (depth {r['compare_depth_layers']})",
                         "top1_err_pct": float(full["final_top1_err_pct"].mean()), "seed": r["seed"]})
    return pd.DataFrame(rows).drop_duplicates(["dataset", "label", "seed"])


def output_dirs(profile: str, tables_dir: str | None = None, figures_dir: str | None = None) -> tuple[str, str]:
    """Where an aggregation writes: the given folders (run_all.sh passes results/<profile> and
    figures/<profile>), else the interactive place ($ELASTIC_INTERACTIVE_DIR or
    results/interactive, /aggregate/<profile>, figures in its figures/), never a tracked folder
    by accident."""
    tables_dir = tables_dir or os.path.join(interactive_dir(), "aggregate", profile)
    return tables_dir, figures_dir or os.path.join(tables_dir, "figures")


def write_all(profile: str, results_root: str | None = None, tables_dir: str | None = None,
              figures_dir: str | None = None) -> dict:
    """Reads the completed runs of ``<results_root>/<profile>/``; writes the tables into
    ``tables_dir`` and the figures into ``figures_dir`` (see ``output_dirs``); returns what it wrote."""
    profile_dir = os.path.join(results_root or os.path.join(ROOT, "results"), profile)
    out_dir, fig_dir = output_dirs(profile, tables_dir, figures_dir)
    long = long_table(profile_dir)
    if long.empty:
        raise FileNotFoundError(f"no completed runs in {profile_dir}; run ./run_all.sh --profile {profile} first")
    written = {"tables_dir": out_dir, "figures_dir": fig_dir}
    written["long"] = results.write_csv(out_dir, "table_error_flops_long.csv", long)
    written["table"] = results.write_csv(out_dir, "table_error_flops.csv", wide_table(long))
    md = os.path.join(out_dir, "table_error_flops.md")
    results.atomic_write_text(md, f"<!-- generated by elastic_lib.aggregate from results/{profile}/*/summary.csv -->\n"
                              + markdown_table(long) + "\n" + machine_caption(profile_dir))
    written["markdown"] = md

    summary = results.collect(profile_dir, "summary.csv")
    exits = results.collect(profile_dir, "exits.csv")
    history = results.collect(profile_dir, "history.csv")
    sweeps = results.collect(profile_dir, "early_exit.csv")
    baselines = summary[summary["variant"] == "baseline"]
    figs = {}
    for ds in sorted(exits["dataset"].unique()):
        if (exits[(exits["dataset"] == ds)]["variant"] == "elastic").any():
            figs[f"error_vs_depth_{ds}"] = plots.depth_curves(exits, baselines, ds)
        if not sweeps.empty and (sweeps["dataset"] == ds).any():
            figs[f"early_exit_accuracy_vs_flops_{ds}"] = plots.early_exit_curves(sweeps, ds)
    figs["baseline_vs_elastic_error"] = plots.baseline_vs_elastic_bars(summary)
    figs["training_curves"] = plots.all_training_curves(history)
    sd = same_depth(profile_dir, summary)
    if not sd.empty:
        figs["same_depth_comparison"] = plots.same_depth_bars(sd)
    written["figures"] = []
    for name, fig in figs.items():
        written["figures"] += plots.save(fig, os.path.join(fig_dir, name))
        plots.plt.close(fig)
    return written


