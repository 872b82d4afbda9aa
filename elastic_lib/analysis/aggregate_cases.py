"""Tables of a profile with ``cases`` (named parameter sets crossed with the grid, e.g. the
Inception-v4 study's BatchNorm / padding configurations or the MicroNet training tricks).

Runs of different cases are different models, never seeds of one: every row here is one case x
variant (x dataset), its seeds averaged. ``table_cases.md`` has the study's first-table layout for
the final output (#top-1 | top-1 | #top-5 | top-5, as accuracies and as errors) beside params,
FLOPs in three named conventions and the MicroNet score; ``table_cases_per_output.md`` the top-1
error of every output; and, against the first case, what each case changed for the final output
and for the exits.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import yaml

from elastic_lib.analysis import stats
from elastic_lib.control import results
from elastic_lib.control.profiles import profile_path

KEYS = ["case", "variant", "dataset"]


def profile_cases(profile: str) -> dict[str, dict]:
    """The profile's ``cases`` as written (name -> pinned parameters), in order; {} without."""
    path = profile_path(profile)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {str(k): dict(v or {}) for k, v in ((yaml.safe_load(f) or {}).get("cases") or {}).items()}


def with_case(df: pd.DataFrame, cases: dict) -> pd.DataFrame:
    """``df`` (from ``results.collect``) with a ``case`` column: the case whose name ends the run's directory."""
    names = sorted(cases, key=len, reverse=True)  # the longest match: "am-refinery" before "am"
    case = [next((c for c in names if run.endswith(f"__{c}")), "") for run in df["run"]]
    return df.assign(case=pd.Categorical(case, categories=list(cases)))


def final_table(exits: pd.DataFrame) -> pd.DataFrame:
    """One row per case x variant x dataset: the final output's counts, accuracies and errors,
    its cost, and the mean top-1 error of the exits (elastic only); means over seeds."""
    final = exits[exits["output"] == "final"].assign(
        top5_correct=lambda d: d["n"] - d["top5_errors"],
        top1_acc=lambda d: d["top1_correct"] / d["n"],
        top5_acc=lambda d: (d["n"] - d["top5_errors"]) / d["n"],
    )
    mean_exit = (
        exits[exits["output"] != "final"]
        .groupby("run")["top1_err_pct"]
        .mean()
        .rename("exits_mean_top1_err_pct")
        .reset_index()
    )
    df = final.merge(mean_exit, on="run", how="left")
    cols = {
        "top1_correct": "#top-1",
        "top1_acc": "top-1",
        "top5_correct": "#top-5",
        "top5_acc": "top-5",
        "top1_err_pct": "top-1 err (%)",
        "top5_err_pct": "top-5 err (%)",
        "exits_mean_top1_err_pct": "exits' mean top-1 err (%)",
        "params_to_output": "params (M)",
        "kernel_macs_to_output": "kernel_macs (M)",
        "macs_to_output": "macs (M)",
        "flops_to_output": "flops (M)",
        "micronet_score": "MicroNet score",
    }
    g = df.groupby(KEYS, observed=True)
    out = g[list(cols)].mean().rename(columns=cols)
    for c in ("params (M)", "kernel_macs (M)", "macs (M)", "flops (M)"):
        out[c] = out[c] / 1e6
    out.insert(0, "seeds", g.size())
    return out.reset_index()


def per_output_table(exits: pd.DataFrame) -> pd.DataFrame:
    """Top-1 error (%) of every output, one row per case x variant x dataset (means over seeds)."""
    wide = exits.pivot_table(index=KEYS, columns="output", values="top1_err_pct", aggfunc="mean", observed=True)
    return wide[sorted(wide.columns, key=lambda o: (o == "final", o))].reset_index()


def per_image_errors(profile_dir: str, exits: pd.DataFrame) -> dict[tuple, dict]:
    """(case, variant, dataset) -> {"final": 0/1 errors, "exits": each image's mean error over
    the exits (elastic only)}, arrays (seeds, images) from the runs' ``predictions.csv``, seeds in
    order; rows whose runs lack it are left out."""
    out = {}
    for key, group in exits.drop_duplicates("run").groupby(KEYS, observed=True):
        frames = []
        for run in group.sort_values("seed")["run"]:
            path = os.path.join(profile_dir, run, "predictions.csv")
            if not os.path.isfile(path):
                break
            frames.append(pd.read_csv(path).sort_values("image_index"))
        else:
            exit_cols = [c for c in frames[0].columns if c.startswith("pred_exit")]
            out[key] = {
                "final": np.stack([(f["pred_final"] != f["label"]).to_numpy(float) for f in frames]),
                "exits": np.stack([(f[exit_cols].to_numpy() != f[["label"]].to_numpy()).mean(axis=1) for f in frames])
                if exit_cols
                else None,
            }
    return out


def _interval(errors: dict | None, ref: dict | None, part: str) -> tuple[float, float] | None:
    """The 95% paired bootstrap interval over test images of a - b (None: no paired errors)."""
    if not errors or not ref or errors[part] is None or ref[part] is None or errors[part].shape != ref[part].shape:
        return None
    return stats.paired_bootstrap(errors[part], ref[part])


def effects(table: pd.DataFrame, reference: str, paired: dict | None = None) -> list[str]:
    """Each case against ``reference`` of the same variant and dataset: the change of the final
    output's top-1 error and of the exits' mean, in points, with a 95% paired bootstrap interval
    over the test images where ``paired`` (``per_image_errors``) has both runs; a case "helped"
    where that interval lies below 0, "hurt" where it lies above 0 (without intervals nothing is
    claimed)."""
    lines, paired = [], paired or {}
    ref = table[table["case"] == reference].set_index(["variant", "dataset"])
    for _, r in table[table["case"] != reference].iterrows():
        key = (r["variant"], r["dataset"])
        if key not in ref.index:
            continue
        mine, theirs = paired.get((r["case"], *key)), paired.get((reference, *key))
        parts = [
            ("final output", "top-1 err (%)", "final", "the final output"),
            ("exits' mean", "exits' mean top-1 err (%)", "exits", "the exits"),
        ]
        text, verdicts = [], {"helped": [], "hurt": []}
        for label, col, part, who in parts:
            if pd.isna(r[col]):
                continue
            ci = _interval(mine, theirs, part)
            text.append(
                f"{label} {r[col] - ref.loc[key, col]:+.2f} points"
                + (f" [95% paired bootstrap {ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
            )
            if ci and (ci[1] < 0 or ci[0] > 0):
                verdicts["helped" if ci[1] < 0 else "hurt"].append(who)
        said = [f"{v} {' and '.join(who)}" for v, who in verdicts.items() if who]
        verdict = (
            "; ".join(said)
            if said
            else ("no difference resolved" if mine and theirs else "no per-image test (predictions.csv missing)")
        )
        lines.append(f"`{r['case']}` vs `{reference}` ({r['variant']}, {r['dataset']}): {', '.join(text)} — {verdict}")
    return lines


def _markdown(df: pd.DataFrame, floatfmt: str) -> str:
    """A table in Markdown, empty cells (a baseline has no exits) shown as "—"."""
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=floatfmt, missingval="—")


def write_case_tables(
    profile: str, profile_dir: str, out_dir: str, cases: dict, caption: str, exits: pd.DataFrame
) -> dict:
    """``table_cases.md`` / ``.csv`` and ``table_cases_per_output.md`` / ``.csv`` (see module doc)
    from the profile's ``exits.csv`` rows with their case (``with_case``)."""
    table, per_output = final_table(exits), per_output_table(exits)
    pinned = "; ".join(
        f"`{c}`: " + (", ".join(f"{k}={v}" for k, v in p.items()) or "the defaults") for c, p in cases.items()
    )
    header = f"<!-- generated by elastic_lib.analysis.aggregate_cases from results/{profile}/*/ -->\n"
    paired = per_image_errors(profile_dir, exits)
    effect_lines = "".join(f"- {line}\n" for line in effects(table, next(iter(cases)), paired))
    md = (
        header
        + _markdown(table, ".4g")
        + "\n\n"
        + f"Cases: {pinned}.\n\n"
        + caption
        + "\nEach case against the first, per variant (a 95% paired bootstrap interval over the test images, "
        "seed-averaged; a case helped where it lies below 0, hurt where it lies above 0):\n" + effect_lines
    )
    written = {
        "cases_csv": results.write_csv(out_dir, "table_cases.csv", table),
        "cases_per_output_csv": results.write_csv(out_dir, "table_cases_per_output.csv", per_output),
    }
    for name, text in (
        ("table_cases.md", md),
        (
            "table_cases_per_output.md",
            header
            + _markdown(per_output, ".2f")
            + "\n\nTop-1 error (%) on the test split of every output (exits shallowest first).\n",
        ),
    ):
        results.atomic_write_text(os.path.join(out_dir, name), text)
        written[name] = os.path.join(out_dir, name)
    return written
