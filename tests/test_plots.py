"""Figure functions apply the workbook's style inside themselves and leave the caller's
matplotlib settings (including interactive mode, which inline display needs) as they were."""
import subprocess
import sys

import matplotlib
import pandas as pd

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def test_importing_plots_changes_no_global_setting():
    code = ("import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
            "before = dict(plt.rcParams)\n"
            "import elastic_lib.plots\n"
            "changed = sorted(k for k, v in plt.rcParams.items() if before[k] != v)\n"
            "assert not changed, changed")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_plot_is_styled_inside_and_restores_every_setting():
    from elastic_lib import plots

    plt.ioff()
    before = dict(plt.rcParams)
    exits = pd.DataFrame({"depth_index": [1, 2], "top1_err_pct": [30.0, 5.0], "top5_err_pct": [10.0, 1.0],
                          "output": ["exit01", "final"]})
    fig = plots.error_vs_depth(exits)
    ax = fig.axes[0]
    assert ax.xaxis._major_tick_kw.get("gridOn") or ax.yaxis._major_tick_kw.get("gridOn")  # the style's grid
    assert ax.get_ylabel() == "test error (%)"
    assert {k: v for k, v in plt.rcParams.items() if before[k] != v} == {}
    plt.close(fig)
