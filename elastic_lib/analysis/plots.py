"""Figure functions the notebooks call (seaborn/matplotlib). Each returns the Figure;
``save`` writes PNG and SVG reproducibly (no timestamps). The workbook's style is applied
inside each function (``styled``), never globally on import."""

from __future__ import annotations

import contextlib
import functools
import os
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from elastic_lib.control.config import default

RC = {"svg.hashsalt": "elastic", "figure.dpi": 100, "savefig.dpi": 110, "axes.grid": True, "grid.alpha": 0.3}


def _style_rc() -> dict:
    from cycler import cycler

    return {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("notebook"),
        "axes.prop_cycle": cycler(color=sns.color_palette("deep")),
        **RC,
    }


def styled(fn):
    """Run a figure function (or ``save``) under the workbook's style, leaving the caller's
    matplotlib settings as they were."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _style():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _style():
    """Set the style keys and restore exactly those (unlike plt.rc_context, which also restores
    ``interactive``: the inline backend turns it on when the first figure activates it, and
    resetting it would stop every later figure from showing inline)."""
    rc = _style_rc()
    old = {k: plt.rcParams[k] for k in rc}
    plt.rcParams.update(rc)
    try:
        yield
    finally:
        plt.rcParams.update(old)


def model_label(backbone: str, variant: str = default("variant")) -> str:
    """The one label rule for models in tables and figures: Elastic-<backbone> or <backbone>."""
    return f"Elastic-{backbone}" if variant == "elastic" else backbone


@styled
def save(fig, stem: str) -> list[str]:
    """``stem``.png and ``stem``.svg, written without volatile metadata."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        path = f"{stem}.{ext}"
        fig.savefig(path, bbox_inches="tight", metadata=meta)
        paths.append(path)
    return paths


def _output_palette(n: int):
    return sns.color_palette("viridis", n)


def _labelled(fig, ax, xlabel: str, ylabel: str, title: str, legend: dict | None = None):
    """Axis labels, title, legend and layout: the same finish for every single-axes figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(**{"fontsize": 8, **(legend or {})})
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- one run
@styled
def training_curves(history: pd.DataFrame, title: str = ""):
    """Left: total train/val loss per epoch. Right: validation top-1 error (%) of every output
    (dark = shallow, light = deep; the final output in red). A dashed line where phase 2 starts."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.plot(history["epoch"], history["loss"], "o-", label="train loss (weighted sum of outputs)")
    a.plot(history["epoch"], history["val_loss"], "s-", label="val loss (weighted sum of outputs)")
    outs = [
        c[len("val_") : -len("_accuracy")] for c in history.columns if c.startswith("val_") and c.endswith("_accuracy")
    ]
    exits = [o for o in outs if o != "final"]
    pal = _output_palette(len(exits))
    for color, out in zip(pal, exits):
        is_edge = out in (exits[0], exits[-1])
        b.plot(
            history["epoch"],
            100 * (1 - history[f"val_{out}_accuracy"]),
            color=color,
            lw=1,
            alpha=0.8,
            label=f"{out} ({'shallowest' if out == exits[0] else 'deepest'} exit)" if is_edge else None,
        )
    if "final" in outs:
        b.plot(
            history["epoch"], 100 * (1 - history["val_final_accuracy"]), color="tab:red", lw=2.5, label="final output"
        )
    for ax in (a, b):
        if (history["phase"] == 2).any() and (history["phase"] == 1).any():
            ax.axvline(
                history.loc[history["phase"] == 2, "epoch"].min() - 0.5,
                color="gray",
                ls="--",
                lw=1,
                label="phase 2 starts (all layers train)" if ax is a else None,
            )
        ax.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend(fontsize=8)
    b.set_ylabel("validation top-1 error (%)")
    b.set_ylim(0, 100)
    b.legend(fontsize=8, loc="upper right", title=f"{len(outs)} outputs" if len(outs) > 1 else None, title_fontsize=8)
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    return fig


@styled
def error_vs_depth(exits: pd.DataFrame, baseline_err: float | None = None, title: str = ""):
    """Top-1 and top-5 test error (%) of every output against the kernel MACs it costs (the
    original code's FLOPs convention); the final output is marked apart from the last exit."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ex = exits[exits["output"] != "final"]
    fin = exits[exits["output"] == "final"]
    x = lambda d: d["kernel_macs_to_output"] / 1e6
    ax.plot(x(ex), ex["top1_err_pct"], "o-", label="exits (top-1)")
    ax.plot(x(ex), ex["top5_err_pct"], "^--", alpha=0.6, label="exits (top-5)")
    if not fin.empty:
        ax.plot(x(fin), fin["top1_err_pct"], "*", color="tab:red", ms=13, label="final output (top-1)")
        ax.plot(x(fin), fin["top5_err_pct"], "*", color="tab:red", ms=9, alpha=0.5, label="final output (top-5)")
    if baseline_err is not None:
        ax.axhline(baseline_err, color="tab:red", ls=":", label=f"baseline final ({baseline_err:.2f}%)")
    ax.set_ylim(0, 100)
    return _labelled(
        fig, ax, "kernel MACs to the output (M; convention: kernel_macs)", "test error (%)", title or "error vs. depth"
    )


@styled
def early_exit_error(sweep: pd.DataFrame, exits: pd.DataFrame, summary: pd.DataFrame | None = None, title: str = ""):
    """Top-1 test error (%) vs. expected kernel MACs per image: the dynamic threshold sweeps of
    both criteria (heads evaluated on the way included), every fixed exit, and the operating
    points chosen on validation."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for crit, df in sweep.groupby("criterion", sort=True):
        df = df.sort_values("test_expected_kernel_macs")
        ax.plot(
            df["test_expected_kernel_macs"] / 1e6,
            100 * (1 - df["test_acc"]),
            "-",
            lw=1.5,
            label=f"dynamic, {crit} threshold sweep",
        )
    ax.plot(
        exits["kernel_macs_to_output"] / 1e6, exits["top1_err_pct"], "ko", ms=4, label="fixed exits (that output alone)"
    )
    if summary is not None:
        for (_, r), m in zip(summary.iterrows(), "*^vPXd"):
            ax.plot(
                r["expected_kernel_macs"] / 1e6,
                100 * (1 - r["test_acc"]),
                m,
                ms=11,
                mfc="none",
                mew=2,
                label=f"chosen on val: {r['policy']}",
            )
    return _labelled(
        fig,
        ax,
        "expected kernel MACs per image (M; convention: kernel_macs)",
        "top-1 test error (%)",
        title or "early exit: error vs. kernel MACs",
        {"loc": "upper right", "fontsize": 8},
    )


@styled
def exit_rates(rates: pd.DataFrame, title: str = ""):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(data=rates[rates["policy"].str.startswith("dynamic")], x="output", y="exit_rate", hue="policy", ax=ax)
    ax.set_ylabel("fraction of test images")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.set_title(title or "where the dynamic policies exit")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- a whole profile
@styled
def depth_curves(exits: pd.DataFrame, baselines: pd.DataFrame, dataset: str, paper: pd.DataFrame | None = None):
    """Per-depth error of every elastic model on ``dataset`` (x = kernel MACs of the output as a
    fraction of the final output's): exits as a line, the final head as its own star (it sits at
    1.0 beside the last exit), the baseline's final error as a dotted line of the same colour,
    and, where given, the original code's per-exit errors (``per_exit_errors.csv``, paper
    protocol) as open squares at the same exits."""
    df = exits[(exits["dataset"] == dataset) & (exits["variant"] == "elastic")]
    backbones = sorted(df["backbone"].unique())
    pal = dict(zip(backbones, sns.color_palette("tab10", len(backbones))))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for bb in backbones:
        d = df[df["backbone"] == bb].groupby("depth_index", as_index=False).mean(numeric_only=True)
        ex, fin = d.iloc[:-1], d.iloc[-1]
        ax.plot(
            ex["kernel_macs_fraction_of_final"],
            ex["top1_err_pct"],
            "o-",
            color=pal[bb],
            label=f"{model_label(bb)} exits",
        )
        ax.plot(
            fin["kernel_macs_fraction_of_final"],
            fin["top1_err_pct"],
            "*",
            ms=13,
            color=pal[bb],
            label=f"{model_label(bb)} final head",
        )
        base = baselines[(baselines["backbone"] == bb) & (baselines["dataset"] == dataset)]
        if not base.empty:
            ax.axhline(base["final_top1_err_pct"].mean(), color=pal[bb], ls=":", lw=1.5, label=f"{bb} baseline")
        ref = (
            None
            if paper is None
            else paper[(paper["backbone"] == bb.replace("_legacy", "")) & (paper["dataset"] == dataset)]
        )
        if ref is not None and not ref.empty:
            x = d.set_index("depth_index")["kernel_macs_fraction_of_final"]
            ref = ref[ref["exit_index"].isin(x.index)]
            ax.plot(
                x.loc[ref["exit_index"]],
                ref["best_test_error_pct"],
                "s",
                mfc="none",
                color=pal[bb],
                label=f"{bb}: original code (paper protocol)",
            )
    outside = (
        {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if len(backbones) > 1 else {"fontsize": 7}
    )
    return _labelled(
        fig,
        ax,
        "kernel MACs of the output / of the final output",
        "top-1 test error (%)",
        f"error vs. depth, {dataset}",
        legend=outside,
    )


@styled
def early_exit_curves(
    sweeps: pd.DataFrame, exits: pd.DataFrame, summary: pd.DataFrame, policies: pd.DataFrame, dataset: str
):
    """Dynamic early exit of every elastic model on ``dataset``, one panel each, in kernel MACs and
    error (%): the threshold sweeps of both criteria (expected cost, heads evaluated on the way
    included), every fixed exit (that output alone), the baseline's final output, and the
    operating points chosen on validation (``early_exit_summary.csv``)."""
    sw = sweeps[sweeps["dataset"] == dataset]
    backbones = sorted(sw["backbone"].unique())
    ncols = min(3, len(backbones))
    nrows = -(-len(backbones) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(7.5, 5.2 * ncols), 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(backbones) :]:
        ax.set_visible(False)
    for k, (ax, bb) in enumerate(zip(axes.flat, backbones)):
        for crit, color in (("max_prob", "C0"), ("entropy", "C2")):
            d = (
                sw[(sw["backbone"] == bb) & (sw["criterion"] == crit)]
                .groupby("threshold", as_index=False)
                .mean(numeric_only=True)
                .sort_values("test_expected_kernel_macs")
            )
            ax.plot(
                d["test_expected_kernel_macs"] / 1e6,
                100 * (1 - d["test_acc"]),
                "-",
                color=color,
                label=f"dynamic, {crit} threshold sweep",
            )
        ex = exits[(exits["dataset"] == dataset) & (exits["backbone"] == bb) & (exits["variant"] == "elastic")]
        ex = ex.groupby("depth_index", as_index=False).mean(numeric_only=True)
        ax.plot(
            ex["kernel_macs_to_output"] / 1e6, ex["top1_err_pct"], "ko", ms=4, label="fixed exits (that output alone)"
        )
        base = summary[
            (summary["dataset"] == dataset) & (summary["backbone"] == bb) & (summary["variant"] == "baseline")
        ]
        if not base.empty:
            ax.plot(
                base["final_kernel_macs"].mean() / 1e6,
                base["final_top1_err_pct"].mean(),
                "D",
                color="C1",
                ms=8,
                label="baseline (no exits), final output",
            )
        pol = (
            policies[(policies["dataset"] == dataset) & (policies["backbone"] == bb) & (policies["policy"] != "final")]
            .groupby("policy", as_index=False)
            .mean(numeric_only=True)
        )
        for (_, r), m in zip(pol.iterrows(), "^vP"):
            ax.plot(
                r["expected_kernel_macs"] / 1e6,
                100 * (1 - r["test_acc"]),
                m,
                color="C3",
                ms=10,
                mfc="none",
                mew=2,
                label=f"chosen on val: {r['policy']}",
            )
        ax.set_title(f"{model_label(bb)}, {dataset}")
        ax.set_ylabel("top-1 test error (%)" if k % ncols == 0 else "")
        ax.set_xlabel("kernel MACs per image (M)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(
        "early exit: dynamic policies (expected cost, heads on the way included), fixed exits and the\n"
        "baseline (kernel MACs = the original code's FLOPs convention)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    return fig


@styled
def baseline_vs_elastic_bars(table: pd.DataFrame):
    """Final-output top-1 error, baseline vs. elastic, per backbone and dataset."""
    g = sns.catplot(
        data=table,
        kind="bar",
        x="backbone",
        y="final_top1_err_pct",
        hue="variant",
        col="dataset",
        height=3.6,
        aspect=1.3,
        errorbar="sd",
        sharey=False,
        hue_order=[v for v in ("baseline", "elastic") if v in set(table["variant"])],
    )
    g.set_axis_labels("", "final-output top-1 error (%)")
    g.tick_params(axis="x", rotation=30)
    g.figure.suptitle("exits as a regulariser? final error without / with exits", y=1.03)
    return g.figure


@styled
def all_training_curves(history: pd.DataFrame):
    """Validation top-1 error of the final output per epoch, baseline and elastic; a dashed
    line where phase 2 (all layers) starts."""
    h = history.assign(val_final_err_pct=100 * (1 - history["val_final_accuracy"]))
    g = sns.relplot(
        data=h,
        kind="line",
        x="epoch",
        y="val_final_err_pct",
        hue="variant",
        col="backbone",
        row="dataset",
        height=3.0,
        aspect=1.4,
        marker="o",
        facet_kws={"sharey": False},
        errorbar="sd",
    )
    for (ds, bb), ax in g.axes_dict.items():
        p2 = h[(h["dataset"] == ds) & (h["backbone"] == bb) & (h["phase"] == 2)]["epoch"]
        if not p2.empty:
            ax.axvline(p2.min() - 0.5, color="0.4", ls="--", lw=1)
            ax.text(p2.min() - 0.4, ax.get_ylim()[1], "phase 2", va="top", fontsize=8, color="0.3")
    g.set_axis_labels("epoch", "val top-1 error (%)")
    g.set_titles("{row_name}: {col_name}")
    width = max(40, int(14 * g.figure.get_figwidth()))  # characters per title line that fit the grid
    g.figure.suptitle(
        textwrap.fill(
            "validation error of the final output per epoch (phase 1: backbone frozen; "
            "dashed line: phase 2, all layers, starts; mean ± sd over seeds)",
            width,
        ),
        fontsize=10,
    )
    g.tight_layout()
    return g.figure


@styled
def same_depth_bars(df: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sns.barplot(data=df, x="label", y="top1_err_pct", hue="dataset", ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("top-1 test error (%)")
    ax.set_title("complete network vs. elastic exit of the same depth (paper Fig. 6)")
    fig.tight_layout()
    return fig


@styled
def same_depth_curve(exits: pd.DataFrame, summary: pd.DataFrame, sd: pd.DataFrame, dataset: str):
    """Paper Fig. 6: error vs. kernel MACs of every output of the elastic network that has an
    exit at another network's depth (``same_depth.csv``), that exit marked, and the other
    network complete (its baseline's final output) as one point."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for _, r in sd[sd["dataset"] == dataset].drop_duplicates(["backbone", "compare_to"]).iterrows():
        e = (
            exits[
                (exits["dataset"] == dataset) & (exits["backbone"] == r["backbone"]) & (exits["variant"] == "elastic")
            ]
            .groupby("depth_index", as_index=False)
            .mean(numeric_only=True)
        )
        ax.plot(
            e["kernel_macs_to_output"] / 1e9,
            e["top1_err_pct"],
            "o-",
            color="C0",
            label=f"{model_label(r['backbone'])} outputs",
        )
        at = exits[
            (exits["dataset"] == dataset)
            & (exits["backbone"] == r["backbone"])
            & (exits["variant"] == "elastic")
            & (exits["output"] == r["output"])
        ].mean(numeric_only=True)
        ax.plot(
            at["kernel_macs_to_output"] / 1e9,
            at["top1_err_pct"],
            "o",
            ms=11,
            mfc="none",
            mec="C3",
            mew=2,
            label=f"{r['output']} at {r['tap_layer']} (depth {int(r['depth_layers'])})",
        )
        full = summary[
            (summary["backbone"] == r["compare_to"])
            & (summary["dataset"] == dataset)
            & (summary["variant"] == "baseline")
        ]
        if not full.empty:
            ax.plot(
                full["final_kernel_macs"].mean() / 1e9,
                full["final_top1_err_pct"].mean(),
                "D",
                color="C1",
                ms=9,
                label=f"{r['compare_to']} complete (depth {int(r['compare_depth_layers'])})",
            )
    return _labelled(
        fig,
        ax,
        "kernel MACs to the output (G, the original code's FLOPs convention)",
        "top-1 test error (%, clean protocol checkpoint)",
        f"same depth: an exit vs. a complete network (paper Fig. 6), {dataset}",
    )
