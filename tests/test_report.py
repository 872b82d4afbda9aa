"""The analysis report (elastic_lib.analysis.report) in the Inception-v4 study's layout, on hand-made tables."""

import numpy as np
import pandas as pd

from elastic_lib.analysis import report

EXITS = pd.DataFrame(
    {
        "output": ["exit01", "final"],
        "tap_layer": ["stem", "inception_c3"],
        "n": [50000, 50000],
        "top1_correct": [20000, 40041],
        "top5_errors": [10000, 2555],
        "params_to_output": [1_000_000, 42_679_816],
        "macs_to_output": [5e8, 6.272e9],
        "flops_to_output": [1.1e9, 12.6e9],
    }
)


def _per_class(n_classes=12):
    rows = []
    for output in ("exit01", "final"):
        for c in range(n_classes):  # class c: top-1 c/20, top-5 (n - c)/n; class 3 has no images
            rows.append(
                {
                    "output": output,
                    "class_index": c,
                    "class_name": f"class {c}",
                    "n": 0 if c == 3 else 50,
                    "top1_acc": c / 20,
                    "top5_acc": (n_classes - c) / n_classes,
                }
            )
    return pd.DataFrame(rows)


def test_the_output_table_has_the_studys_counts_and_accuracies():
    latency = pd.DataFrame({"output": ["exit01", "final"], "latency_ms": [1.234, 38.56]})
    table = report.output_table(EXITS, latency).set_index("output")
    # the study's first configuration: 40041 correct of 50000 = 0.801, 47445 top-5 = 0.949
    assert table.loc["final", "#top-1"] == 40041 and table.loc["final", "top-1"] == 0.801
    assert table.loc["final", "#top-5"] == 47445 and table.loc["final", "top-5"] == 0.949
    assert table.loc["final", "params (M)"] == 42.68 and table.loc["final", "MACs (G)"] == 6.272
    assert table.loc["exit01", "latency (ms)"] == 1.23 and list(table.columns) == report.COLUMNS[1:]


def test_bottom_classes_by_top1_and_top5_with_names():
    bottom = report.bottom_classes(_per_class(), "final")
    assert len(bottom) == 10 and list(bottom.index) == list(range(1, 11))
    assert bottom["class (by top-1)"].tolist()[:3] == ["class 0", "class 1", "class 2"]  # class 3: no images
    assert bottom["class (by top-5)"].iloc[0] == "class 11" and np.isclose(bottom["top-5"].iloc[0], 1 / 12, atol=1e-3)


def test_the_markdown_report_names_device_and_every_output():
    text = report.analysis_report(
        "inception_v4__cifar10__elastic", {"bn epsilon": 1e-5}, EXITS, _per_class(), None, "CPU: test, 2 cores"
    )
    assert text.startswith("# Analysis report: inception_v4__cifar10__elastic") and "bn epsilon: 1e-05" in text
    header = next(line for line in text.splitlines() if line.startswith("| output"))
    assert [c.strip() for c in header.strip("|").split("|")] == report.COLUMNS
    assert "| final    | inception_c3 |    40041 |   0.801 |    47445 |   0.949 |" in text
    assert "(CPU: test, 2 cores)" in text
    assert text.index("## Bottom-10 classes: final") < text.index("## Bottom-10 classes: exit01")
