"""A run's analysis report in the layout of the Inception-v4 study (issue 12): per output the
correct counts and accuracies (``#top-1 | top-1 | #top-5 | top-5``), params (M) and FLOPs (G),
mean single-image inference time with the device named, and the bottom-10 classes by top-1 and
by top-5 accuracy with their names. ``Experiment.finish`` writes it to ``report.md``; the
experiment notebook shows it. Everything comes from the run's own tables (exits, per-class,
latency, complexity): nothing here is measured twice.
"""

from __future__ import annotations

import pandas as pd

from elastic_lib.analysis.metrics import worst_classes

COLUMNS = ["output", "tap", "#top-1", "top-1", "#top-5", "top-5", "params (M)", "MACs (G)", "FLOPs (G)", "latency (ms)"]
NOTES = (
    "top-1 / top-5: accuracy on the test split (fractions, as the study); #: correct images. "
    "params (M): parameters that compute the output. MACs (G): multiply-accumulates (what PyTorch op counters "
    "such as thop report as FLOPs); FLOPs (G): 2 x MACs + element-wise work. latency: mean batch-1 time of "
    "that output alone through the staged forward ({device}); empty when the run skipped latency."
)


def _sig(values: pd.Series, digits: int = 4) -> list[float]:
    """Four significant digits (42.68 M as the study prints it; small exits stay readable)."""
    return [float(f"{v:.{digits}g}") for v in values]


def output_table(exits: pd.DataFrame, latency: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per output in the study's columns, from ``exits.csv`` (and ``latency.csv``)."""
    lat = {} if latency is None or latency.empty else latency.set_index("output")["latency_ms"].to_dict()
    n = exits["n"]
    top5_correct = n - exits["top5_errors"]
    return pd.DataFrame(
        {
            "output": exits["output"],
            "tap": exits["tap_layer"],
            "#top-1": exits["top1_correct"].astype(int),
            "top-1": (exits["top1_correct"] / n).round(3),
            "#top-5": top5_correct.astype(int),
            "top-5": (top5_correct / n).round(3),
            "params (M)": _sig(exits["params_to_output"] / 1e6),
            "MACs (G)": _sig(exits["macs_to_output"] / 1e9),
            "FLOPs (G)": _sig(exits["flops_to_output"] / 1e9),
            "latency (ms)": [round(lat[o], 2) if o in lat else None for o in exits["output"]],
        }
    )[COLUMNS]


def bottom_classes(per_class: pd.DataFrame, output: str, n: int = 10) -> pd.DataFrame:
    """The study's bottom-``n`` lists side by side: classes by top-1 and by top-5 accuracy."""
    cols = {}
    for by, label in (("top1_acc", "top-1"), ("top5_acc", "top-5")):
        worst = worst_classes(per_class, output, n, by)
        cols[f"class (by {label})"] = worst["class_name"].tolist()
        cols[label] = worst[by].round(3).tolist()
    return pd.DataFrame(cols, index=pd.RangeIndex(1, len(cols["top-1"]) + 1, name="rank"))


def _markdown(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_markdown(index=index, floatfmt="g")


def analysis_report(
    title: str, config: dict, exits: pd.DataFrame, per_class: pd.DataFrame, latency: pd.DataFrame | None, device: str
) -> str:
    """The report as Markdown: the run's configuration, the per-output table, then the bottom-10
    classes of every output (the final output first)."""
    lines = [
        f"# Analysis report: {title}",
        "",
        " | ".join(f"{k}: {v}" for k, v in config.items()),
        "",
        "## Accuracy, size and cost of every output",
        "",
        _markdown(output_table(exits, latency)),
        "",
        NOTES.format(device=device),
        "",
    ]
    outputs = list(exits["output"])
    for output in [outputs[-1], *outputs[:-1]]:
        lines += [f"## Bottom-10 classes: {output}", "", _markdown(bottom_classes(per_class, output), index=True), ""]
    return "\n".join(lines)
