"""Turn a profile's run directories into the paper-style table and the profile's figures."""

from __future__ import annotations

import os

import pandas as pd

from elastic_lib.analysis import aggregate_cases, exit_curves, plots, stats
from elastic_lib.control import provenance, results
from elastic_lib.control.backend import recorded
from elastic_lib.control.config import ConfigError
from elastic_lib.control.paths import ROOT, interactive_dir
from elastic_lib.control.profiles import load_profile

METRICS = [
    ("final_top1_err_pct", "err_final"),
    ("best_top1_err_pct", "err_best_output"),
    ("clean_protocol_top1_err_pct", "err_clean_protocol"),
    ("paper_protocol_top1_err_pct", "err_paper_protocol"),
    ("final_top5_err_pct", "top5_err_final"),
    ("final_macro_f1", "macro_f1_final"),
    ("final_loss", "loss_final"),
]
MODEL_COLS = [
    ("final_kernel_macs", "kernel_macs_final"),
    ("final_flops", "flops_final"),
    ("final_params", "params_final"),
    ("total_params", "total_params"),
    ("trainable_params", "trainable_params"),
    ("non_trainable_params", "non_trainable_params"),
    ("final_latency_ms", "latency_ms_final"),
]


def reference_dir() -> str:
    return os.path.join(ROOT, "results", "reference")


def paper_errors() -> pd.DataFrame:
    """Table I of the paper (results/reference/paper_table1.csv), one row per backbone and
    dataset; ResNet50's elastic number is the 'exits after all 16 residual blocks' row."""
    ref = pd.read_csv(os.path.join(reference_dir(), "paper_table1.csv"))
    ref = ref[~ref["note"].fillna("").str.contains("ResNet-50-5")]
    # resnet50_legacy is the paper's ResNet50 (Keras 2.1.5 topology): it stands beside the same row
    ref = pd.concat([ref, ref[ref["backbone"] == "resnet50"].assign(backbone="resnet50_legacy")])
    long = pd.concat(
        [
            ref.assign(variant="baseline", paper_err_pct=ref["baseline_error_pct"]),
            ref.assign(variant="elastic", paper_err_pct=ref["elastic_error_pct"]),
        ]
    )
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
            cells = {
                "err final (%)": ("err_final", None),
                "err best output, val-selected (%)": ("err_best_output", None),
                "err clean protocol: val-selected checkpoint, better of last exit/final on val (%)": (
                    "err_clean_protocol",
                    None,
                ),
                "err paper protocol: min over phase-2 epochs on test, better of last exit/final (%)": (
                    "err_paper_protocol",
                    None,
                ),
                "top-5 err (%)": ("top5_err_final", None),
                "macro-F1": ("macro_f1_final", ".4f"),
                "loss": ("loss_final", ".4f"),
            }
            for head, (key, fmt) in cells.items():
                row[f"{ds} {head}"] = (
                    ""
                    if r is None
                    else _pm(r[f"{key}_mean"], r[f"{key}_std"])
                    if fmt is None
                    else format(r[f"{key}_mean"], fmt)
                )
            row[f"{ds} paper's Table I err, paper protocol (%)"] = (
                "" if r is None or pd.isna(r["paper_err_pct"]) else f"{r['paper_err_pct']:.2f}"
            )
        first = d.iloc[0]
        row[f"FLOPs final ({convention}, {datasets[0]})"] = f"{first[f'{convention}_final_mean'] / 1e6:.2f}M"
        for col, name in (
            ("total_params", "params total"),
            ("trainable_params", "trainable"),
            ("non_trainable_params", "non-trainable"),
        ):
            row[name] = f"{int(first[f'{col}_mean']):,}"
        row["seeds"] = str(int(first["n_seeds"]))
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


# The paper's model names (Table I); others fall back to the registry name.
PAPER_NAMES = {
    "mobilenet_0.75": "MobileNet (α = 0.75)",
    "inception_v3": "Inception-V3",
    "resnet50": "ResNet-50",
    "resnet50_legacy": "ResNet-50 (Keras 2.1.5)",
    "densenet121": "DenseNet-121",
    "densenet169": "DenseNet-169",
    "vgg16": "VGG-16",
    "mobilenet_v2": "MobileNetV2",
    "efficientnet_b0": "EfficientNet-B0",
}
DATASET_NAMES = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "digits": "digits",
    "cifar100coarse": "CIFAR-100 (coarse)",
}


def paper_name(backbone: str, variant: str) -> str:
    name = PAPER_NAMES.get(backbone, backbone)
    return f"Elastic-{name}" if variant == "elastic" else name


def _err_cell(r) -> str:
    """clean · paper protocol [the paper's Table I value]."""
    if r is None:
        return ""
    ref = "" if pd.isna(r["paper_err_pct"]) else f" [{r['paper_err_pct']:.2f}]"
    return (
        f"{_pm(r['err_clean_protocol_mean'], r['err_clean_protocol_std'])} · "
        f"{_pm(r['err_paper_protocol_mean'], r['err_paper_protocol_std'])}{ref}"
    )


def paper_table(long: pd.DataFrame) -> str:
    """Table I's layout: one row per model, per dataset one error column, then the final
    output's kernel MACs and params per dataset (each dataset's model has its own head)."""
    datasets = [d for d in ("cifar10", "cifar100") if d in set(long["dataset"])] + sorted(
        set(long["dataset"]) - {"cifar10", "cifar100"}
    )
    from elastic_lib.control.registry import list_backbones

    order = {b: i for i, b in enumerate(list_backbones())}  # the registry lists Table I's models in its order
    long = long.sort_values(
        ["backbone", "variant"], key=lambda c: c.map(order) if c.name == "backbone" else c, kind="stable"
    )
    rows = []
    for (bb, var), d in long.groupby(["backbone", "variant"], sort=False):
        d = d.set_index("dataset")
        row = {"model": paper_name(bb, var)}
        for ds in datasets:
            row[f"{DATASET_NAMES.get(ds, ds)} top-1 error (%): clean · paper protocol [paper]"] = _err_cell(
                d.loc[ds] if ds in d.index else None
            )
        present = [ds for ds in datasets if ds in d.index]
        row["FLOPs of the final output (kernel MACs, M)" + (" per dataset" if len(datasets) > 1 else "")] = " · ".join(
            f"{d.loc[ds, 'kernel_macs_final_mean'] / 1e6:,.1f}" for ds in present
        )
        row["params of the final output" + (" per dataset" if len(datasets) > 1 else "")] = " · ".join(
            f"{int(d.loc[ds, 'params_final_mean']):,}" for ds in present
        )
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def caption(profile: str, profile_dir: str, long: pd.DataFrame | None = None, paper_layout: bool = True) -> str:
    """How the numbers were made, from the runs' params.yaml: size, weights, data, epochs,
    seeds, protocols, convention, commits (``paper_layout=False``: without the paper table's
    protocols and convention, which a table then states itself)."""
    docs = {r: results.read_params_yaml(r) for r in results.completed_runs(profile_dir)}
    runs = [results.read_params(r, with_plumbing=True, doc=d) for r, d in docs.items()]
    envs = [d.get("environment") or {} for d in docs.values()]

    def values(key, fmt=str):
        return ", ".join(sorted({fmt(p[key]) for p in runs}))

    commits = sorted(
        {(e.get("git_commit") or "?")[:7] + (" with uncommitted changes" if e.get("git_dirty") else "") for e in envs}
    )
    data = values(
        "limit_per_class", lambda v: "all training images" if not v else f"the first {v} training images per class"
    )
    source = values("data_dir", lambda v: f"the archives in `{v}`" if v else "the embedded or downloaded data")
    tests = results.collect(profile_dir, "exits.csv").groupby("dataset")["n"].max()
    data += f" (a fraction {values('val_fraction')} of them for validation) from {source}; test images: " + ", ".join(
        f"{DATASET_NAMES.get(k, k)} {int(v):,}" for k, v in tests.items()
    )
    seeds = sorted({p["seed"] for p in runs})
    ran = results.collect(profile_dir, "summary.csv").get("epochs_run", pd.Series(dtype=float)).dropna().astype(int)
    span = "" if ran.empty else str(ran.min()) if ran.min() == ran.max() else f"{ran.min()}–{ran.max()}"
    ran = f", {span} epochs run (early stopping on validation loss)" if span else ""
    keras_on = ", ".join(sorted({f"Keras {e.get('keras', '?')} on {recorded(e)}" for e in envs}))
    setup = (
        f"Profile `{profile}`: {len(runs)} runs ({keras_on}); {values('image_size')} px; weights "
        f"{values('weights', lambda v: v or 'random init')}; {data}; up to {values('phase1_epochs')} + "
        f"{values('phase2_epochs')} epochs (phase 1 + phase 2){ran}; seeds {', '.join(map(str, seeds))} "
        "(mean ± std over seeds when more than one). "
    )
    if not paper_layout:
        return setup + f"Commit(s): {', '.join(commits)}.\n"
    return (
        setup
        + "Errors: **clean protocol** = the best-val_loss checkpoint tested once, of the last exit and the final head "
        "the one with the lower validation error; **paper protocol** = every output tested after each phase-2 "
        "epoch, the minimum over epochs of the better of the last exit and the final head (test-selected, as "
        "the original code); [paper] = the paper's Table I (ImageNet weights, 224 px, full CIFAR, paper "
        f"protocol). FLOPs in the original code's convention (kernel MACs). Commit(s): {', '.join(commits)}. "
        "Top-5, F1, loss, best output, latency: `table_diagnostics.md`.\n"
    )


def _paired_errors(profile_dir: str, elastic_run: str, baseline_run: str) -> tuple:
    """0/1 final-output top-1 errors of two runs on the same test images (matched on image_index,
    labels checked); None when a run has no predictions.csv (made before it was written)."""
    paths = [os.path.join(profile_dir, r, "predictions.csv") for r in (elastic_run, baseline_run)]
    if not all(os.path.isfile(p) for p in paths):
        return None
    e, b = (pd.read_csv(p, usecols=["image_index", "label", "pred_final"]) for p in paths)
    m = e.merge(b, on="image_index", suffixes=("_e", "_b"), validate="one_to_one")
    if len(m) != len(e) or len(m) != len(b) or (m["label_e"] != m["label_b"]).any():
        raise ValueError(
            f"{elastic_run} and {baseline_run} were not tested on the same images (image_index/labels differ)"
        )
    return (m["pred_final_e"] != m["label_e"]).to_numpy(), (m["pred_final_b"] != m["label_b"]).to_numpy()


def _pair_row(backbone: str, dataset: str, err: dict, mine: list[dict]) -> dict:
    mean, lo, hi = stats.t_interval([r["diff_pts"] for r in mine])
    seeds = [r["seed"] for r in mine]
    blo, bhi = stats.paired_bootstrap([err["elastic", s] for s in seeds], [err["baseline", s] for s in seeds])
    return {
        "backbone": backbone,
        "dataset": dataset,
        "n_seeds": len(seeds),
        "elastic_err_mean_pct": sum(r["elastic_err_pct"] for r in mine) / len(mine),
        "baseline_err_mean_pct": sum(r["baseline_err_pct"] for r in mine) / len(mine),
        "diff_mean_pts": mean,
        "diff_ci95_seeds_low_pts": lo,
        "diff_ci95_seeds_high_pts": hi,
        "diff_ci95_images_low_pts": blo,
        "diff_ci95_images_high_pts": bhi,
        "mcnemar_p_max": max(r["mcnemar_p"] for r in mine),
    }


def paired_differences(profile_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Elastic minus baseline, final-output top-1 test error, for every backbone x dataset with both
    variants: (one row per pair with the mean over the seeds both have, the 95% t interval over
    seeds, the 95% per-image paired bootstrap interval and the largest exact-McNemar p over seeds;
    one row per seed with its McNemar counts). In points of error (%); negative = elastic better.
    Seeds whose runs lack predictions.csv are left out."""
    summary = results.collect(profile_dir, "summary.csv")
    if summary.empty:
        return pd.DataFrame(), pd.DataFrame()
    rows, per_seed = [], []
    for (bb, ds), d in summary.groupby(["backbone", "dataset"], sort=True):
        runs = {(r["variant"], r["seed"]): r["run"] for _, r in d.iterrows()}
        err, mine = {}, []
        for seed in sorted({s for v, s in runs if v == "elastic"} & {s for v, s in runs if v == "baseline"}):
            pair = _paired_errors(profile_dir, runs["elastic", seed], runs["baseline", seed])
            if pair is None:
                continue
            err["elastic", seed], err["baseline", seed] = pair
            b, c, pval = stats.mcnemar_exact(~pair[0], ~pair[1])
            e, base = 100 * pair[0].mean(), 100 * pair[1].mean()
            mine.append(
                {
                    "backbone": bb,
                    "dataset": ds,
                    "seed": seed,
                    "elastic_err_pct": e,
                    "baseline_err_pct": base,
                    "diff_pts": e - base,
                    "only_elastic_right": b,
                    "only_baseline_right": c,
                    "mcnemar_p": pval,
                    "test_images": len(pair[0]),
                }
            )
        if mine:
            rows.append(_pair_row(bb, ds, err, mine))
            per_seed += mine
    return pd.DataFrame(rows), pd.DataFrame(per_seed)


def verdict(r) -> str:
    """One sentence on a pair of ``paired_differences``: the gain holds only when the interval over
    seeds (with two or more) and the per-image paired bootstrap interval both exclude zero."""
    name = f"{DATASET_NAMES.get(r['dataset'], r['dataset'])}, {PAPER_NAMES.get(r['backbone'], r['backbone'])}"
    seeds_ci = not pd.isna(r["diff_ci95_seeds_low_pts"])
    ivals = [(r["diff_ci95_images_low_pts"], r["diff_ci95_images_high_pts"])]
    if seeds_ci:
        ivals.append((r["diff_ci95_seeds_low_pts"], r["diff_ci95_seeds_high_pts"]))
    word = (
        "the elastic gain holds"
        if all(hi < 0 for _, hi in ivals)
        else "the elastic model is worse"
        if all(lo > 0 for lo, _ in ivals)
        else "no difference resolved"
    )
    over = (
        f"95% CI over {int(r['n_seeds'])} seeds [{r['diff_ci95_seeds_low_pts']:+.2f}, "
        f"{r['diff_ci95_seeds_high_pts']:+.2f}]; "
        if seeds_ci
        else "1 seed (no interval over seeds); "
    )
    return (
        f"{name}: elastic − baseline final-output error {r['diff_mean_pts']:+.2f} points, {over}"
        f"95% per-image paired bootstrap [{r['diff_ci95_images_low_pts']:+.2f}, "
        f"{r['diff_ci95_images_high_pts']:+.2f}]; exact McNemar "
        + (f"p ≤ {r['mcnemar_p_max']:.2g} in every seed" if seeds_ci else f"p = {r['mcnemar_p_max']:.2g}")
        + f": {word}."
    )


def stale_caption(profile_dir: str, profile: str | None = None) -> str:
    """A warning naming the runs whose code, notebook, parameters (as ``profile`` defines them now)
    or data changed since they were made."""
    cfgs = {}
    if profile:
        try:
            cfgs = {os.path.basename(r.output_dir): r for r in load_profile(profile, os.path.dirname(profile_dir)).runs}
        except ConfigError:
            pass
    stale = {
        os.path.basename(r): provenance.changes(r, cfgs.get(os.path.basename(r)))
        for r in results.completed_runs(profile_dir)
    }
    stale = {k: v for k, v in stale.items() if v}
    if not stale:
        return ""
    lines = [f"- `{k}`: {'; '.join(v)}" for k, v in sorted(stale.items())]
    return (
        f"**Warning: {len(stale)} run(s) are stale** (made by other code, notebook, parameters or data than "
        "the working tree's; `./run_all.sh --rerun-stale` redoes them):\n" + "\n".join(lines) + "\n"
    )


def machine_caption(profile_dir: str) -> str:
    """Which machine(s) made the numbers; trained numbers move across CPUs (docs/reproducibility.md)."""
    names = results.machines(profile_dir)
    return (
        f"Trained on: {'; '.join(names)}. Trained numbers are bit-identical only on the same machine "
        "(same oneDNN ISA, threads, seed); across CPUs they move within the measured tolerances of "
        "`results/smoke/reproducibility/tolerances.csv` (docs/reproducibility.md).\n"
    )


def same_depth(profile_dir: str, summary: pd.DataFrame) -> pd.DataFrame:
    """Paper Fig. 6 rows: a complete network vs. an elastic exit of the same depth."""
    sd = results.collect(profile_dir, "same_depth.csv")
    if sd.empty:
        return sd
    rows = []
    for _, r in sd.iterrows():
        full = summary[
            (summary["backbone"] == r["compare_to"])
            & (summary["dataset"] == r["dataset"])
            & (summary["variant"] == "baseline")
        ]
        rows.append(
            {
                "dataset": r["dataset"],
                "label": f"{plots.model_label(r['backbone'])} {r['output']} (depth {r['depth_layers']})",
                "top1_err_pct": r["top1_err_pct"],
                "seed": r["seed"],
            }
        )
        if not full.empty:
            rows.append(
                {
                    "dataset": r["dataset"],
                    "label": f"{r['compare_to']} complete (depth {r['compare_depth_layers']})",
                    "top1_err_pct": float(full["final_top1_err_pct"].mean()),
                    "seed": r["seed"],
                }
            )
    return pd.DataFrame(rows).drop_duplicates(["dataset", "label", "seed"])


def output_dirs(profile: str, tables_dir: str | None = None, figures_dir: str | None = None) -> tuple[str, str]:
    """Where an aggregation writes: the given folders (run_all.sh passes results/<profile> and
    figures/<profile>), else the interactive place ($ELASTIC_INTERACTIVE_DIR or
    results/interactive, /aggregate/<profile>, figures in its figures/), never a tracked folder
    by accident."""
    tables_dir = tables_dir or os.path.join(interactive_dir(), "aggregate", profile)
    return tables_dir, figures_dir or os.path.join(tables_dir, "figures")


def write_tables(profile: str, profile_dir: str, out_dir: str, long: pd.DataFrame) -> dict:
    """The table in Table I's layout with its caption, paired elastic-vs-baseline statements and
    stale warning; the diagnostics table; the CSVs behind them. Returns what it wrote."""
    written = {}
    written["long"] = results.write_csv(out_dir, "table_error_flops_long.csv", long)
    written["table"] = results.write_csv(out_dir, "table_error_flops.csv", wide_table(long))
    pairs, per_seed = paired_differences(profile_dir)
    for name, df in (("paired_differences.csv", pairs), ("paired_differences_per_seed.csv", per_seed)):
        if df.empty:  # no pair (any more): no file left from an earlier aggregation
            if os.path.isfile(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
        else:
            written[name] = results.write_csv(out_dir, name, df)
    verdicts = "".join(f"- {verdict(r)}\n" for _, r in pairs.iterrows())
    md = os.path.join(out_dir, "table_error_flops.md")
    header = f"<!-- generated by elastic_lib.analysis.aggregate from results/{profile}/*/summary.csv -->\n"
    warn = stale_caption(profile_dir, profile)
    results.atomic_write_text(
        md,
        header
        + (warn + "\n" if warn else "")
        + paper_table(long)
        + "\n"
        + caption(profile, profile_dir, long)
        + "\n"
        + ("Elastic vs. baseline (paired, `paired_differences.csv`):\n" + verdicts + "\n" if verdicts else "")
        + machine_caption(profile_dir),
    )
    written["markdown"] = md
    diag = os.path.join(out_dir, "table_diagnostics.md")
    results.atomic_write_text(diag, header + markdown_table(long) + "\n" + machine_caption(profile_dir))
    written["diagnostics"] = diag
    return written


CASES_CAPTION = (
    "Errors: the best-val_loss checkpoint tested once on the test split (clean protocol), no test-set "
    "selection. Costs of the final output for one image: params; kernel_macs (the original code's "
    "count: convolution and dense multiply-accumulates); macs (all multiply-accumulates, what PyTorch "
    "op counters report as FLOPs); flops (2 x macs + element-wise work); MicroNet score = params/2 "
    "(16-bit) / 36.5 M + (mults/2 + adds) / 10.49 G (MicroNet Challenge 2019, CIFAR-100).\n"
)


def _save_figures(figs: dict, fig_dir: str) -> list[str]:
    """Every figure as ``<fig_dir>/<name>`` (PNG + SVG), closed after saving; the files written."""
    paths = []
    for name, fig in figs.items():
        paths += plots.save(fig, os.path.join(fig_dir, name))
        plots.plt.close(fig)
    return paths


def _write_cases(profile: str, profile_dir: str, out_dir: str, fig_dir: str, cases: dict) -> dict:
    warn = stale_caption(profile_dir, profile)
    text = (warn + "\n" if warn else "") + caption(profile, profile_dir, paper_layout=False) + CASES_CAPTION
    exits = aggregate_cases.with_case(results.collect(profile_dir, "exits.csv"), cases)
    written = aggregate_cases.write_case_tables(
        profile, profile_dir, out_dir, cases, text + machine_caption(profile_dir), exits
    )
    written["markdown"] = written["table_cases.md"]
    summary = aggregate_cases.with_case(results.collect(profile_dir, "summary.csv"), cases)
    history = aggregate_cases.with_case(results.collect(profile_dir, "history.csv"), cases)
    history["variant"] = history["variant"] + " · " + history["case"].astype(str)  # one line per case, never pooled
    figs = {"training_curves": plots.all_training_curves(history)}
    for (case, ds), group in exits.groupby(["case", "dataset"], observed=True):
        if (group["variant"] == "elastic").any():
            base = summary[(summary["case"] == case) & (summary["variant"] == "baseline")]
            fig = figs[f"error_vs_depth_{ds}_{case}"] = plots.depth_curves(group, base, ds)
            fig.axes[0].set_title(f"{fig.axes[0].get_title()} (case {case})".strip())
    written["figures"] = _save_figures(figs, fig_dir)
    return written


def write_all(
    profile: str, results_root: str | None = None, tables_dir: str | None = None, figures_dir: str | None = None
) -> dict:
    """Reads the completed runs of ``<results_root>/<profile>/``; writes the tables into
    ``tables_dir`` and the figures into ``figures_dir`` (see ``output_dirs``); returns what it wrote."""
    profile_dir = os.path.join(results_root or os.path.join(ROOT, "results"), profile)
    out_dir, fig_dir = output_dirs(profile, tables_dir, figures_dir)
    long = long_table(profile_dir)
    if long.empty:
        raise FileNotFoundError(f"no completed runs in {profile_dir}; run ./run_all.sh --profile {profile} first")
    written = {"tables_dir": out_dir, "figures_dir": fig_dir}
    cases = aggregate_cases.profile_cases(profile)
    if cases:  # runs of different cases are different models: their own tables and per-case figures
        written |= _write_cases(profile, profile_dir, out_dir, fig_dir, cases)
        return written
    written |= write_tables(profile, profile_dir, out_dir, long)

    summary = results.collect(profile_dir, "summary.csv")
    exits = results.collect(profile_dir, "exits.csv")
    history = results.collect(profile_dir, "history.csv")
    sweeps = results.collect(profile_dir, "early_exit.csv")
    baselines = summary[summary["variant"] == "baseline"]
    figs = {}
    policies = results.collect(profile_dir, "early_exit_summary.csv")
    paper_exits = (
        pd.read_csv(os.path.join(reference_dir(), "per_exit_errors.csv")) if profile.startswith("paper") else None
    )
    for ds in sorted(exits["dataset"].unique()):
        if (exits[(exits["dataset"] == ds)]["variant"] == "elastic").any():
            figs[f"error_vs_depth_{ds}"] = plots.depth_curves(exits, baselines, ds, paper_exits)
        if not sweeps.empty and (sweeps["dataset"] == ds).any():
            figs[f"early_exit_error_vs_kernel_macs_{ds}"] = plots.early_exit_curves(
                sweeps, exits, summary, policies, ds
            )
    figs["baseline_vs_elastic_error"] = plots.baseline_vs_elastic_bars(summary)
    figs["training_curves"] = plots.all_training_curves(history)
    sd = same_depth(profile_dir, summary)
    if not sd.empty:
        figs["same_depth_comparison"] = plots.same_depth_bars(sd)
        raw = results.collect(profile_dir, "same_depth.csv")
        for ds in sorted(raw["dataset"].unique()):
            figs[f"same_depth_error_vs_kernel_macs_{ds}"] = plots.same_depth_curve(exits, summary, raw, ds)
    written["figures"] = _save_figures(figs, fig_dir)
    curves = exit_curves.write(profile_dir, out_dir, fig_dir)
    if curves:
        written["exit_policies"] = {k: v for k, v in curves.items() if k != "figures"}
        written["figures"] += curves["figures"]
    return written
