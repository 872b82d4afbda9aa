"""Tables of a profile with cases (elastic_lib.analysis.aggregate_cases) on hand-made run tables."""

import numpy as np
import pandas as pd

from elastic_lib.analysis import aggregate_cases

CASES = {"ce": {}, "am": {"head": "am_softmax"}, "am-refinery": {"head": "am_softmax", "refinery_run": "@am"}}


def _exits(run, variant, final_err, exit_errs=()):
    rows = [
        {
            "run": run,
            "variant": variant,
            "dataset": "cifar100",
            "output": f"exit{i + 1:02d}",
            "n": 200,
            "top1_err_pct": e,
            "top1_correct": round(200 * (1 - e / 100)),
            "top5_errors": 50,
            "top5_err_pct": 25.0,
            "params_to_output": 1e6,
            "kernel_macs_to_output": 2e6,
            "macs_to_output": 3e6,
            "flops_to_output": 7e6,
            "micronet_score": 0.01,
        }
        for i, e in enumerate(exit_errs)
    ]
    rows.append(
        {
            **(rows[0] if rows else {}),
            "run": run,
            "variant": variant,
            "dataset": "cifar100",
            "output": "final",
            "n": 200,
            "top1_err_pct": final_err,
            "top1_correct": round(200 * (1 - final_err / 100)),
            "top5_errors": 40,
            "top5_err_pct": 20.0,
            "params_to_output": 2.5e6,
            "kernel_macs_to_output": 4e6,
            "macs_to_output": 5e6,
            "flops_to_output": 11e6,
            "micronet_score": 0.02,
        }
    )
    return rows


def _table():
    rows = (
        _exits("b0__cifar100__elastic__ce", "elastic", 80.0, (95.0, 90.0))
        + _exits("b0__cifar100__elastic__am", "elastic", 78.0, (96.0, 92.0))
        + _exits("b0__cifar100__elastic__am-refinery", "elastic", 81.0, (93.0, 89.0))
        + _exits("b0__cifar100__baseline__ce", "baseline", 82.5)
    )
    return aggregate_cases.with_case(pd.DataFrame(rows), CASES)


def test_the_case_is_the_longest_case_name_that_ends_the_run_directory():
    exits = _table()
    runs = exits.drop_duplicates("run").set_index("run")["case"]
    assert runs["b0__cifar100__elastic__am-refinery"] == "am-refinery" and runs["b0__cifar100__elastic__am"] == "am"


def test_final_table_keeps_cases_apart_and_has_the_studys_columns():
    table = aggregate_cases.final_table(_table())
    assert len(table) == 4 and table["seeds"].tolist() == [1, 1, 1, 1]  # no case averaged into another
    am = table[(table["case"] == "am") & (table["variant"] == "elastic")].iloc[0]
    assert am["#top-1"] == 44 and np.isclose(am["top-1"], 0.22) and am["#top-5"] == 160 and np.isclose(am["top-5"], 0.8)
    assert np.isclose(am["exits' mean top-1 err (%)"], 94.0) and am["params (M)"] == 2.5 and am["macs (M)"] == 5.0
    base = table[table["variant"] == "baseline"].iloc[0]
    assert np.isnan(base["exits' mean top-1 err (%)"])


def test_effects_against_the_first_case_per_variant():
    table = aggregate_cases.final_table(_table())
    lines = aggregate_cases.effects(table, "ce")  # no per-image errors: differences, nothing claimed
    assert lines == [
        "`am` vs `ce` (elastic, cifar100): final output -2.00 points, exits' mean +1.50 points"
        " — no per-image test (predictions.csv missing)",
        "`am-refinery` vs `ce` (elastic, cifar100): final output +1.00 points, exits' mean -1.50 points"
        " — no per-image test (predictions.csv missing)",
    ]
    rng = np.random.default_rng(0)
    ce = (rng.random((1, 400)) < 0.5).astype(float)
    better = ce.copy()
    better[0, np.flatnonzero(ce[0])[:60]] = 0  # 60 of ce's errors corrected, nothing else changed
    paired = {
        ("ce", "elastic", "cifar100"): {"final": ce, "exits": ce},
        ("am", "elastic", "cifar100"): {"final": better, "exits": ce},
        ("am-refinery", "elastic", "cifar100"): {"final": ce, "exits": ce},
    }
    lines = aggregate_cases.effects(table, "ce", paired)
    assert "final output -2.00 points [95% paired bootstrap -18." in lines[0] and lines[0].endswith(
        "helped the final output"
    )
    assert lines[1].endswith("no difference resolved") and "[95% paired bootstrap +0.00, +0.00]" in lines[1]
    paired[("am-refinery", "elastic", "cifar100")] = {"final": better, "exits": np.ones_like(ce)}  # exits: all wrong
    lines = aggregate_cases.effects(table, "ce", paired)
    assert lines[1].endswith("— helped the final output; hurt the exits")
    wide = aggregate_cases.per_output_table(_table())
    assert list(wide.columns) == ["case", "variant", "dataset", "exit01", "exit02", "final"]
