"""Reproducibility: the machine behind a run, its determinism settings, and checking a rerun
against committed numbers with tolerances that were measured, not guessed.

What is exact and what is not (measured, see ``results/smoke/reproducibility/``):

- bit-identical: the same machine (same oneDNN ISA), thread count, seed and code;
- exact on every machine: shapes, output names, taps, parameter and FLOPs counts, split sizes;
- within a tolerance across CPUs: everything that comes out of training. TensorFlow's CPU
  kernels (oneDNN, even with ``TF_ENABLE_ONEDNN_OPTS=0``) are chosen by CPU, and last-bit
  differences grow during training. ``ONEDNN_MAX_CPU_ISA`` on one machine changes the kernels
  the way another CPU does; ``scripts/measure_spread.py`` trains the smoke runs under several
  caps, and ``tolerances()`` turns that spread into per-output tolerances.

Check your own rerun against the committed numbers::

    python -m elastic_lib.control.reproducibility check results/smoke/mobilenet_0.75__digits__elastic \
        results/interactive/mobilenet_0.75__digits__elastic

This module imports neither TensorFlow nor Keras at import time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from elastic_lib.control.environment import machine_info
from elastic_lib.control.paths import ROOT

SPREAD_DIR = os.path.join(ROOT, "results", "smoke", "reproducibility")
TOLERANCES_CSV = os.path.join(SPREAD_DIR, "tolerances.csv")

# Per-output metrics that come out of training (exits.csv): compared with a tolerance.
TRAINED_METRICS = ("top1_err_pct", "top5_err_pct", "val_top1_err_pct", "macro_f1", "loss")
# Columns of exits.csv that do not depend on training: compared exactly.
EXACT_COLUMNS = (
    "output",
    "tap_layer",
    "n",
    "top5_k",
    "depth_index",
    "depth_layers",
    "params_to_output",
    "kernel_macs_to_output",
    "macs_to_output",
    "flops_to_output",
)
SPREAD_COLUMNS = ["run", "isa_cap", "onednn_isa", "seed", "output", *TRAINED_METRICS, "epochs_run", "train_s"]
# Tolerance = MARGIN x the largest deviation seen across ISA caps, and never below the floor
# (two test images on the 360-image digits test split, i.e. the smallest step that is not noise).
MARGIN = 1.5
FLOORS = {
    "top1_err_pct": 2 * 100 / 360,
    "top5_err_pct": 2 * 100 / 360,
    "val_top1_err_pct": 2 * 100 / 288,
    "macro_f1": 0.02,
    "loss": 0.05,
}


def run_in_subprocess(params: dict, out_dir: str, cap: str | None = None) -> str:
    """Run every step of one experiment (``experiment.run``) into ``out_dir`` in a fresh Python
    process, with ``ONEDNN_MAX_CPU_ISA=cap`` (None: unset, the CPU's own kernels; the cap only
    acts if set before TensorFlow starts). Seeds and op determinism stay in that process.
    Returns ``out_dir``."""
    import yaml

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "in.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({**params, "output_dir": out_dir}, f)
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    code = (
        "import sys, yaml, elastic_lib\nelastic_lib.setup_environment()\nfrom elastic_lib import experiment\n"
        "experiment.run(yaml.safe_load(open(sys.argv[1])))"
    )
    proc = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(
            f"training {out_dir} under ONEDNN_MAX_CPU_ISA={cap or '(unset)'} failed:\n" + proc.stderr[-3000:]
        )
    return out_dir


# ---------------------------------------------------------------- tolerances
def tolerances(spread: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Per run, output and metric: the largest deviation of any ISA cap's value from the host's
    (same seed), the seed-to-seed standard deviation (host kernels), and the tolerance
    ``max(margin x isa_max_abs_dev, floor)``."""
    rows = []
    base_seed = spread[spread["isa_cap"] != "host"]["seed"].min() if (spread["isa_cap"] != "host").any() else 0
    for (run, output), g in spread.groupby(["run", "output"], sort=False):
        same_seed = g[g["seed"] == base_seed]
        host = same_seed[same_seed["isa_cap"] == "host"]
        seeds = g[g["isa_cap"] == "host"]
        for m in TRAINED_METRICS:
            ref = float(host[m].iloc[0]) if len(host) else np.nan
            dev = float((same_seed[m] - ref).abs().max())
            rows.append(
                {
                    "run": run,
                    "output": output,
                    "metric": m,
                    "host_value": ref,
                    "isa_min": float(same_seed[m].min()),
                    "isa_max": float(same_seed[m].max()),
                    "isa_max_abs_dev": dev,
                    "n_isa": len(same_seed),
                    "seed_std": float(seeds[m].std(ddof=1)) if len(seeds) > 1 else np.nan,
                    "n_seeds": seeds["seed"].nunique(),
                    "tolerance": max(margin * dev, FLOORS[m]),
                }
            )
    return pd.DataFrame(rows)


def load_tolerances(path: str = TOLERANCES_CSV) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found; measure it with scripts/measure_spread.py, then "
            "python -m elastic_lib.control.reproducibility tolerances"
        )
    return pd.read_csv(path)


def compare_run(
    reference_dir: str, run_dir: str, tol: pd.DataFrame | None = None, run: str | None = None
) -> pd.DataFrame:
    """Every check of a rerun against a reference run directory: the exits.csv columns that do
    not depend on training exactly, each output's trained metrics within its tolerance. One
    row per check with ``ok``; never raises on a mismatch (see ``assert_matches``)."""
    ref = pd.read_csv(os.path.join(reference_dir, "exits.csv"))
    new = pd.read_csv(os.path.join(run_dir, "exits.csv"))
    tol = load_tolerances() if tol is None else tol
    run = run or os.path.basename(os.path.normpath(reference_dir))
    t = tol[tol["run"] == run].set_index(["output", "metric"])["tolerance"]
    if t.empty:
        raise KeyError(f"no tolerances for run {run!r}; runs with tolerances: {sorted(tol['run'].unique())}")
    rows = [
        {
            "check": "outputs",
            "output": "",
            "column": "output",
            "reference": len(ref),
            "value": len(new),
            "tolerance": 0.0,
            "ok": list(ref["output"]) == list(new["output"]),
        }
    ]
    if not rows[0]["ok"]:
        return pd.DataFrame(rows)
    for col in EXACT_COLUMNS:
        for out, a, b in zip(ref["output"], ref[col], new[col]):
            rows.append(
                {
                    "check": "exact",
                    "output": out,
                    "column": col,
                    "reference": a,
                    "value": b,
                    "tolerance": 0.0,
                    "ok": a == b,
                }
            )
    for m in TRAINED_METRICS:
        for out, a, b in zip(ref["output"], ref[m], new[m]):
            tl = float(t.get((out, m), np.nan))
            rows.append(
                {
                    "check": "tolerance",
                    "output": out,
                    "column": m,
                    "reference": a,
                    "value": b,
                    "tolerance": tl,
                    "ok": bool(abs(b - a) <= tl + 1e-9),
                }
            )
    df = pd.DataFrame(rows)
    df.insert(
        5,
        "abs_diff",
        [
            abs(b - a) if isinstance(a, (int, float, np.number)) and not isinstance(a, bool) else np.nan
            for a, b in zip(df["reference"], df["value"])
        ],
    )
    return df


def assert_matches(reference_dir: str, run_dir: str, tol: pd.DataFrame | None = None, run: str | None = None):
    checks = compare_run(reference_dir, run_dir, tol, run)
    bad = checks[~checks["ok"]]
    if len(bad):
        raise AssertionError(
            f"{len(bad)} of {len(checks)} checks of {run_dir} against {reference_dir} fail:\n"
            + bad.to_string(index=False)
        )
    return checks


def spread_summary(spread: pd.DataFrame, tol: pd.DataFrame) -> pd.DataFrame:
    """Per run: the final output's top-1 error on the host, its range across the ISA caps and
    its seed-to-seed std, its tolerance, and the gap between the first and the final output
    (what the figures show), so that the spread can be judged against it."""
    rows = []
    t = tol[tol["metric"] == "top1_err_pct"].set_index(["run", "output"])
    for run, g in spread.groupby("run", sort=False):
        final, first = t.loc[(run, "final")], t.loc[(run, g["output"].iloc[0])]
        caps = g[(g["output"] == "final") & (g["seed"] == g[g["isa_cap"] != "host"]["seed"].min())]
        rows.append(
            {
                "run": run,
                "final_top1_err_pct_host": final["host_value"],
                "final_isa_min_pct": final["isa_min"],
                "final_isa_max_pct": final["isa_max"],
                "isa_caps": " ".join(f"{c}={v:.2f}" for c, v in zip(caps["isa_cap"], caps["top1_err_pct"])),
                "final_seed_std_pts": final["seed_std"],
                "final_tolerance_pts": final["tolerance"],
                "first_output_top1_err_pct_host": first["host_value"],
                "gap_first_to_final_pts": first["host_value"] - final["host_value"],
                "max_tolerance_top1_pts_any_output": float(t.loc[run]["tolerance"].max()),
                "epochs_run_range": f"{g['epochs_run'].min()}-{g['epochs_run'].max()}",
            }
        )
    return pd.DataFrame(rows)


def write_report(spread_csv: str, out_dir: str = SPREAD_DIR, margin: float = MARGIN) -> list[str]:
    """tolerances.csv and summary.md (generated, never typed) from the spread measurement."""
    spread = pd.read_csv(spread_csv)
    tol = tolerances(spread, margin)
    tol_path = os.path.join(out_dir, "tolerances.csv")
    tol.to_csv(tol_path, index=False, float_format="%.6g")
    summary = spread_summary(spread, tol)
    caps = ", ".join(sorted(set(spread["isa_cap"]) - {"host"}))
    host_isa = spread[spread["isa_cap"] == "host"]["onednn_isa"].iloc[0]
    md = [
        "<!-- generated by python -m elastic_lib.control.reproducibility tolerances from spread_runs.csv -->",
        f"Smoke profile trained under `ONEDNN_MAX_CPU_ISA` = {caps} and unset (host: {host_isa}), seed "
        f"{int(spread['seed'].min())}, and with seeds {', '.join(map(str, sorted(set(spread['seed']) - {0})))} "
        f"on the host's kernels. Tolerance = max({margin} x the largest deviation of a cap from the host, floor); "
        f"floors: {', '.join(f'{k} {v:.3g}' for k, v in FLOORS.items())}. Errors in % of the digits test split "
        "(360 images: 1 image = 0.28 points).",
        "",
        summary.round(3).to_markdown(index=False, tablefmt="github"),
        "",
    ]
    md_path = os.path.join(out_dir, "summary.md")
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    return [tol_path, md_path]


# ---------------------------------------------------------------- CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m elastic_lib.control.reproducibility", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare a rerun with a committed run directory")
    c.add_argument("reference_dir")
    c.add_argument("run_dir")
    c.add_argument("--tolerances", default=TOLERANCES_CSV)
    c.add_argument("--run", default=None, help="run id in the tolerances CSV (default: reference folder name)")
    t = sub.add_parser("tolerances", help="spread CSV (scripts/measure_spread.py) -> tolerances.csv + summary.md")
    t.add_argument("spread_csv", nargs="?", default=os.path.join(SPREAD_DIR, "spread_runs.csv"))
    t.add_argument("--out-dir", default=SPREAD_DIR)
    t.add_argument("--margin", type=float, default=MARGIN)
    sub.add_parser(
        "machine",
        help="print the CPU description a run records in params.yaml (the devices: "
        "elastic_lib.runtime.backend_details())",
    )
    a = ap.parse_args(argv)
    if a.cmd == "machine":
        for k, v in machine_info().items():
            print(f"{k}: {v}")
        return 0
    if a.cmd == "tolerances":
        for path in write_report(a.spread_csv, a.out_dir, a.margin):
            print("wrote", os.path.relpath(path, ROOT))
        return 0
    checks = compare_run(a.reference_dir, a.run_dir, load_tolerances(a.tolerances), a.run)
    bad = checks[~checks["ok"]]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print((bad if len(bad) else checks[checks["check"] == "tolerance"]).to_string(index=False))
    print(f"{len(checks) - len(bad)} of {len(checks)} checks pass" + ("" if bad.empty else f"; {len(bad)} FAIL"))
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
