"""How the notebooks show results: DataFrames as tables (HTML in JupyterLab, aligned text in the
committed ``.ipynb``), wide tables transposed or split, and where every output went.

Each function displays and returns nothing, so a notebook cell stays one call."""

from __future__ import annotations

import os

import pandas as pd

from elastic_lib.control.paths import display_path

PANDAS_OPTIONS = {
    "display.precision": 4,
    "display.max_columns": 40,
    "display.width": 140,
    "display.max_colwidth": 48,
    "display.show_dimensions": False,
}


def setup() -> None:
    """pandas display settings for the notebooks (4 decimals, no column elision at our widths)."""
    for key, value in PANDAS_OPTIONS.items():
        pd.set_option(key, value)


def _display(obj) -> None:
    from IPython.display import display

    display(obj)


def table(df: pd.DataFrame, index: str | None = "output", columns: list[str] | None = None) -> None:
    """A DataFrame as a table, ``index`` (a column) as its row labels, optionally only ``columns``."""
    if columns is not None:
        df = df[[c for c in ([index] if index else []) + columns if c in df.columns]]
    _display(df.set_index(index) if index and index in df.columns else df)


def split(df: pd.DataFrame, index: str, *groups: list[str]) -> None:
    """A wide table as several narrow ones, each ``index`` plus one group of columns (columns in
    no group go with the last); every column keeps its own dtype and format."""
    rest = [c for c in df.columns if c != index and not any(c in g for g in groups)]
    for i, cols in enumerate(groups):
        table(df, index=index, columns=list(cols) + (rest if i == len(groups) - 1 else []))


def early_exit_summary(summary: pd.DataFrame) -> None:
    """The selected policies: accuracy side, then cost side (both conventions)."""
    split(
        summary,
        "policy",
        ["threshold", "val_acc", "test_acc", "test_drop_pts", "mean_exit"],
        ["expected_kernel_macs", "kernel_macs_ratio_vs_final", "expected_flops", "flops_ratio_vs_final"],
    )


def exit_analysis(res: dict) -> None:
    """The policy zoo's fits (a row per family and target: validation picks, test judges), then
    the run-level diagnostics with their bootstrap intervals; a line when there are none."""
    if not res:
        print("no early-exit analysis (a baseline, or exit_analysis: false)")
        return
    pol = res["policies"]
    cols = ["value", "family", "params", "val_accuracy", "test_accuracy", "test_cost_fraction"]
    table(pol[pol["status"] == "ok"], index="target", columns=cols)
    diag = res["diagnostics"]
    table(diag[diag["output"].str.startswith("any")], index="metric", columns=["output", "value", "ci_low", "ci_high"])


def latency(df: pd.DataFrame) -> None:
    """Per-output latency, then the dynamic policy's row(s) apart (they have their own columns)."""
    if df.empty:
        print("latency skipped (latency_repeats=0)")
        return
    dynamic = df["threshold"].notna() if "threshold" in df.columns else pd.Series(False, index=df.index)
    table(df[~dynamic], columns=["latency_ms", "latency_std_ms", "speedup_vs_final", "flops_ratio_vs_final"])
    if dynamic.any():
        rows = df[dynamic].dropna(axis=1, how="all")
        table(rows.astype({c: int for c in ("n_images",) if c in rows.columns}))


def markdown(text: str) -> None:
    """Markdown (a run's report.md) rendered in the notebook."""
    from IPython.display import Markdown

    _display(Markdown(text))


def figure(path: str, width: int = 720) -> None:
    """A saved figure, under its (repo- or interactive-relative) path."""
    from IPython.display import Image

    print(display_path(path))
    _display(Image(filename=path, width=width))


def outputs(**folders: str) -> None:
    """Where every output went: per labelled folder, its files grouped by kind (sorted names)."""
    kinds = {
        ".csv": "CSVs",
        ".md": "tables",
        ".png": "figures",
        ".svg": "figures",
        ".yaml": "parameters",
        ".h5": "weights",
        ".npz": "stored outputs",
        ".ipynb": "notebooks",
    }
    for label, folder in folders.items():
        names = sorted(
            n for n in os.listdir(folder) if not n.startswith(".") and os.path.isfile(os.path.join(folder, n))
        )
        print(f"{label}: {display_path(folder)}/")
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(kinds.get(os.path.splitext(n)[1], "other"), []).append(n)
        for kind, files in groups.items():
            print(f"  {kind}: {', '.join(files)}")
