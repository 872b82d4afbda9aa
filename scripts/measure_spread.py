"""Measure how far trained numbers move across CPUs (oneDNN ISA caps) and across seeds.

Each run of a profile is trained in a fresh process per ``ONEDNN_MAX_CPU_ISA`` cap (a cap
makes oneDNN pick other kernels, as another CPU does; the cap must be set before TensorFlow
starts) and per extra seed (host kernels); every output's test/validation metrics go to one
long CSV. ``python -m elastic_lib.control.reproducibility tolerances`` turns that CSV into the
tolerances of the regression tests.

    python scripts/measure_spread.py --profile smoke --caps host,AVX512_CORE,AVX2,AVX,SSE41 \
        --seeds 1,2 --out results/smoke/reproducibility/spread_runs.csv

Latency is switched off (timings are not compared). Rows are appended per finished run and
finished (run, cap, seed) combinations are skipped, so an interrupted measurement resumes.

On another machine than the one that made the committed runs, ``--label NAME`` records its rows as
``NAME:host``, ``NAME:AVX2``, ...: the tolerances then cover that machine's deviation from the
committed host too (``host`` stays the reference machine's own kernels).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pandas as pd
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from elastic_lib.control.profiles import load_profile
from elastic_lib.control.reproducibility import SPREAD_COLUMNS, TRAINED_METRICS, run_in_subprocess


def rows_of(run_dir: str, run: str, cap: str, seed: int) -> pd.DataFrame:
    exits = pd.read_csv(os.path.join(run_dir, "exits.csv"))
    summary = pd.read_csv(os.path.join(run_dir, "summary.csv")).iloc[0]
    with open(os.path.join(run_dir, "params.yaml")) as f:
        env = yaml.safe_load(f)["environment"]
    df = exits[["output", *TRAINED_METRICS]].copy()
    df.insert(0, "seed", seed)
    df.insert(0, "onednn_isa", env["machine"]["onednn_isa"])
    df.insert(0, "isa_cap", cap)
    df.insert(0, "run", run)
    df["epochs_run"] = int(summary["epochs_run"])
    df["train_s"] = float(summary["train_s"])
    return df[SPREAD_COLUMNS]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--only", default="", help="substring of the run ids to measure")
    ap.add_argument(
        "--caps",
        default="host,AVX512_CORE,AVX2,AVX,SSE41",
        help="ONEDNN_MAX_CPU_ISA values, 'host' = unset (seed of the profile)",
    )
    ap.add_argument("--seeds", default="1,2", help="extra seeds, trained with host kernels")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run parameter (YAML value), e.g. --set phase2_epochs=20",
    )
    ap.add_argument("--label", default="", help="another machine than the reference: its rows' isa_cap is LABEL:cap")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    runs = [r for r in load_profile(a.profile).runs if a.only in r.run_id()]
    caps = [c for c in a.caps.split(",") if c]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    done = pd.read_csv(a.out) if os.path.isfile(a.out) else pd.DataFrame(columns=SPREAD_COLUMNS)
    have = set(zip(done["run"], done["isa_cap"], done["seed"]))
    jobs = [(r, c, r.seed) for r in runs for c in caps] + [(r, "host", s) for r in runs for s in seeds]
    for i, (cfg, cap, seed) in enumerate(jobs, 1):
        run = cfg.run_id()
        label = f"{a.label}:{cap}" if a.label else cap
        if (run, label, seed) in have:
            continue
        t0 = time.perf_counter()
        params = {**cfg.to_dict(), **overrides, "seed": seed, "latency_repeats": 0}  # timings are not compared
        run_dir = run_in_subprocess(params, tempfile.mkdtemp(prefix="spread_"), None if cap == "host" else cap)
        rows = rows_of(run_dir, run, label, seed)
        header = not os.path.isfile(a.out)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        rows.to_csv(a.out, mode="a", header=header, index=False, float_format="%.6g")
        final = rows[rows["output"] == "final"].iloc[0]
        print(
            f"[{i}/{len(jobs)}] {run} cap={label} seed={seed}: final top-1 err {final['top1_err_pct']:.2f}%, "
            f"{final['epochs_run']} epochs, {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
