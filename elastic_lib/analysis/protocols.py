"""The two ways a run's error is reported, side by side (no TensorFlow here).

* **paper protocol** (what the original code did and Table I reports): every output is evaluated
  on the test set after each phase-2 epoch (``test_history.csv``); an output's error is its
  minimum over those epochs, and an elastic model's reported error is the better of its last
  exit and its final head. Epochs and outputs are selected on the test set: optimistic.
* **clean protocol**: the checkpoint selected on the validation split (best ``val_loss``) is
  tested once; for an elastic model, of the last exit and the final head the one with the
  lower validation error is reported. Nothing is selected on the test set.
"""

from __future__ import annotations

import re

import pandas as pd

PAPER = "paper protocol: min over phase-2 epochs of test error (test-selected)"
CLEAN = "clean protocol: val-selected checkpoint, tested once"
_TEST_COL = re.compile(r"test_(.+)_top1_err_pct")


def test_history(history: pd.DataFrame) -> pd.DataFrame:
    """Long form of the per-epoch test errors in ``history`` (one row per epoch and output)."""
    cols = [c for c in history.columns if _TEST_COL.fullmatch(c)]
    if not cols:
        return pd.DataFrame(columns=["epoch", "phase", "phase_epoch", "output", "test_top1_err_pct"])
    df = history[["epoch", "phase", "phase_epoch", *cols]].dropna(subset=cols, how="all")
    long = df.melt(
        id_vars=["epoch", "phase", "phase_epoch"], value_vars=cols, var_name="output", value_name="test_top1_err_pct"
    )
    long["output"] = long["output"].map(lambda c: _TEST_COL.fullmatch(c).group(1))
    order = {c: i for i, c in enumerate(_TEST_COL.fullmatch(c).group(1) for c in cols)}
    return long.sort_values(
        ["epoch", "output"], key=lambda s: s.map(order) if s.name == "output" else s, kind="stable"
    ).reset_index(drop=True)


def per_output_min(test_hist: pd.DataFrame) -> pd.DataFrame:
    """Per output: the minimum test error over epochs and the first epoch reaching it."""
    if test_hist.empty:
        return pd.DataFrame(columns=["output", "paper_protocol_top1_err_pct", "paper_protocol_epoch"])
    idx = test_hist.groupby("output", sort=False)["test_top1_err_pct"].idxmin()
    best = test_hist.loc[idx, ["output", "test_top1_err_pct", "epoch"]]
    return best.rename(
        columns={"test_top1_err_pct": "paper_protocol_top1_err_pct", "epoch": "paper_protocol_epoch"}
    ).reset_index(drop=True)


def _last_two(exits: pd.DataFrame) -> pd.DataFrame:
    """The final head, and the last exit if the model has exits (the original's candidates)."""
    return exits.iloc[-2:] if len(exits) > 1 else exits.iloc[-1:]


def reported(exits: pd.DataFrame, test_hist: pd.DataFrame) -> dict:
    """A run's error under both protocols. ``exits``: exits.csv (test and validation error of
    every output at the val-selected checkpoint)."""
    cand = _last_two(exits)
    clean = cand.loc[cand["val_top1_err_pct"].idxmin()]
    row = {"clean_protocol_top1_err_pct": float(clean["top1_err_pct"]), "clean_protocol_output": clean["output"]}
    mins = per_output_min(test_hist).set_index("output")
    names = [o for o in cand["output"] if o in mins.index]
    if names:
        best = mins.loc[names, "paper_protocol_top1_err_pct"].idxmin()
        row.update(
            {
                "paper_protocol_top1_err_pct": float(mins.loc[best, "paper_protocol_top1_err_pct"]),
                "paper_protocol_output": best,
                "paper_protocol_epoch": int(mins.loc[best, "paper_protocol_epoch"]),
            }
        )
    else:  # no phase 2 (phase2_epochs=0): the paper protocol has nothing to take a minimum over
        row.update(
            {"paper_protocol_top1_err_pct": float("nan"), "paper_protocol_output": "", "paper_protocol_epoch": 0}
        )
    return row
