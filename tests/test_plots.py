"""Figure functions apply the workbook's style inside themselves and leave the caller's
matplotlib settings (including interactive mode, which inline display needs) as they were."""

import subprocess
import sys

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def test_importing_plots_changes_no_global_setting():
    code = (
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "before = dict(plt.rcParams)\n"
        "import elastic_lib.analysis.plots\n"
        "changed = sorted(k for k, v in plt.rcParams.items() if before[k] != v)\n"
        "assert not changed, changed"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_plot_is_styled_inside_and_restores_every_setting():
    from elastic_lib.analysis import plots

    plt.ioff()
    before = dict(plt.rcParams)
    exits = pd.DataFrame(
        {
            "depth_index": [1, 2],
            "top1_err_pct": [30.0, 5.0],
            "top5_err_pct": [10.0, 1.0],
            "output": ["exit01", "final"],
            "kernel_macs_to_output": [1e6, 2e6],
        }
    )
    fig = plots.error_vs_depth(exits)
    ax = fig.axes[0]
    assert ax.xaxis._major_tick_kw.get("gridOn") or ax.yaxis._major_tick_kw.get("gridOn")  # the style's grid
    assert ax.get_ylabel() == "test error (%)"
    assert {k: v for k, v in plt.rcParams.items() if before[k] != v} == {}
    plt.close(fig)


# ---------------------------------------------------------------- the profile figures: one convention, error (%)
def _profile_frames():
    ex = pd.DataFrame(
        {
            "dataset": "d",
            "backbone": "b",
            "variant": "elastic",
            "depth_index": [1, 2, 3],
            "output": ["exit01", "exit02", "final"],
            "top1_err_pct": [50.0, 30.0, 28.0],
            "kernel_macs_to_output": [1e6, 3e6, 3.1e6],
            "kernel_macs_fraction_of_final": [0.32, 0.97, 1.0],
        }
    )
    summary = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "backbone": ["b", "b"],
            "variant": ["baseline", "elastic"],
            "final_top1_err_pct": [35.0, 28.0],
            "final_kernel_macs": [3.1e6, 3.1e6],
        }
    )
    sweeps = pd.DataFrame(
        {
            "dataset": "d",
            "backbone": "b",
            "criterion": ["max_prob"] * 3 + ["entropy"] * 3,
            "threshold": [0.1, 0.5, 0.9] * 2,
            "test_acc": [0.5, 0.6, 0.7] * 2,
            "test_expected_kernel_macs": [1e6, 2e6, 3.2e6] * 2,
        }
    )
    policies = pd.DataFrame(
        {
            "dataset": "d",
            "backbone": "b",
            "policy": ["final", "dynamic_max_prob"],
            "test_acc": [0.72, 0.69],
            "expected_kernel_macs": [3.1e6, 2.5e6],
        }
    )
    return ex, summary, sweeps, policies


def test_early_exit_figure_shows_sweeps_fixed_exits_baseline_and_chosen_points():
    from elastic_lib.analysis import plots

    ex, summary, sweeps, policies = _profile_frames()
    fig = plots.early_exit_curves(sweeps, ex, summary, policies, "d")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "top-1 test error (%)" and "kernel MACs" in ax.get_xlabel()
    assert "kernel MACs" in fig._suptitle.get_text()
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["dynamic, max_prob threshold sweep"].get_ydata()) == pytest.approx([50.0, 40.0, 30.0])
    assert list(lines["fixed exits (that output alone)"].get_xdata()) == [1.0, 3.0, 3.1]  # M kernel MACs
    assert list(lines["baseline (no exits), final output"].get_ydata()) == [35.0]
    assert list(lines["chosen on val: dynamic_max_prob"].get_xydata()[0]) == pytest.approx([2.5, 31.0])
    assert (
        "dynamic, entropy threshold sweep" in lines and len(lines) == 5
    )  # the final policy is the baseline's x, not drawn
    plt.close(fig)


def test_error_vs_depth_keeps_the_final_head_apart_and_overlays_the_original():
    from elastic_lib.analysis import plots

    ex, summary, _, _ = _profile_frames()
    paper = pd.DataFrame(
        {"backbone": "b", "dataset": "d", "exit_index": [1, 2, 3], "best_test_error_pct": [40.0, 20.0, 9.0]}
    )
    fig = plots.depth_curves(ex, summary[summary["variant"] == "baseline"], "d", paper)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["Elastic-b exits"].get_ydata()) == [50.0, 30.0]  # the exits only
    assert (
        list(lines["Elastic-b final head"].get_xydata()[0]) == [1.0, 28.0]
        and lines["Elastic-b final head"].get_marker() == "*"
    )
    assert list(lines["b: original code (paper protocol)"].get_ydata()) == [40.0, 20.0, 9.0]
    assert ax.get_ylabel() == "top-1 test error (%)" and "kernel MACs" in ax.get_xlabel()
    plt.close(fig)


def test_training_curves_show_error_and_where_phase_2_starts():
    from elastic_lib.analysis import plots

    h = pd.DataFrame(
        {
            "dataset": "d",
            "backbone": "b",
            "variant": "elastic",
            "seed": 0,
            "epoch": [1, 2, 3],
            "phase": [1, 2, 2],
            "val_final_accuracy": [0.5, 0.8, 0.9],
        }
    )
    fig = plots.all_training_curves(h)
    ax = fig.axes[0]
    assert "error" in ax.get_ylabel() and "(%)" in ax.get_ylabel()
    assert [list(ln.get_ydata()) for ln in ax.get_lines() if ln.get_marker() == "o"][0] == pytest.approx([50, 20, 10])
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [1.5, 1.5]
    plt.close(fig)


# ---------------------------------------------------------------- one run's figures: the same convention
def test_run_figures_use_kernel_macs_and_error():
    from elastic_lib.analysis import plots

    ex, summary, sweeps, _ = _profile_frames()
    ex["top5_err_pct"] = [20.0, 10.0, 9.0]
    fig = plots.error_vs_depth(ex)
    ax = fig.axes[0]
    assert "kernel MACs" in ax.get_xlabel() and ax.get_ylabel() == "test error (%)"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["exits (top-1)"].get_xdata()) == [1.0, 3.0]  # the final output is drawn apart
    assert list(lines["final output (top-1)"].get_xydata()[0]) == [3.1, 28.0]
    plt.close(fig)

    run_summary = pd.DataFrame({"policy": ["dynamic_max_prob"], "test_acc": [0.69], "expected_kernel_macs": [2.5e6]})
    fig = plots.early_exit_error(
        sweeps[["criterion", "threshold", "test_acc", "test_expected_kernel_macs"]], ex, run_summary
    )
    ax = fig.axes[0]
    assert ax.get_ylabel() == "top-1 test error (%)" and "kernel MACs" in ax.get_xlabel()
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["dynamic, entropy threshold sweep"].get_ydata()) == pytest.approx([50.0, 40.0, 30.0])
    assert list(lines["chosen on val: dynamic_max_prob"].get_xydata()[0]) == pytest.approx([2.5, 31.0])
    plt.close(fig)


def test_run_training_curves_show_validation_error_and_phase_2():
    from elastic_lib.analysis import plots

    h = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "phase": [1, 2, 2],
            "loss": [3.0, 2.0, 1.5],
            "val_loss": [3.1, 2.2, 1.8],
            "val_exit01_accuracy": [0.2, 0.3, 0.4],
            "val_exit02_accuracy": [0.3, 0.5, 0.6],
            "val_final_accuracy": [0.4, 0.6, 0.75],
        }
    )
    fig = plots.training_curves(h)
    a, b = fig.axes
    assert b.get_ylabel() == "validation top-1 error (%)"
    lines = {ln.get_label(): ln for ln in b.get_lines()}
    assert list(lines["final output"].get_ydata()) == pytest.approx([60.0, 40.0, 25.0])
    assert "exit01 (shallowest exit)" in lines and "exit02 (deepest exit)" in lines
    phase = [ln for ln in a.get_lines() if ln.get_label().startswith("phase 2 starts")]
    assert phase and list(phase[0].get_xdata()) == [1.5, 1.5]
    plt.close(fig)
