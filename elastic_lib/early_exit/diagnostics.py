"""Per-run early-exit diagnostics on stored probabilities (``zoo.ExitOutputs``), each with a
bootstrap interval over test images:

- **oracle exit**: every image stops at its earliest correct output (the final when none is):
  the accuracy and cost no policy can beat with these outputs;
- **overthinking** (Kaya, Hong, Dumitraş, "Shallow-Deep Networks", ICML 2019): per early output,
  the share of images it already gets right that the final output also gets right (*wasteful*:
  computing on was wasted) or gets wrong (*destructive*: computing on hurt);
- **monotonicity** of the anytime prediction: per step from output k to k + 1, the share of
  images right at k and wrong at k + 1 (*lost*) and the reverse (*gained*); the share of images
  with at least one loss;
- **calibration** per output: expected calibration error on test before and after a temperature
  fitted on validation (``policies.calibration_table``);
- **per-class exit rates** of a policy.

Intervals: percentile bootstrap over test images (``scipy.stats.bootstrap``, 1,000 resamples, a
fixed seed), so they say how much the numbers would move with another test draw of this size.
ECE is biased upwards on small samples (fewer images per bin), so its interval can sit a little
above the full-sample value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from elastic_lib.early_exit.policies import calibration_table
from elastic_lib.early_exit.zoo import Decision, ExitOutputs

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_ci(stat, n: int, resamples: int = RESAMPLES, level: float = LEVEL, boot_seed: int = 0) -> tuple:
    """(estimate, low, high) of ``stat(idx)`` (a statistic of the images ``idx``), percentile
    bootstrap over ``n`` images."""
    from scipy.stats import bootstrap

    idx = np.arange(n)
    res = bootstrap(
        (idx,),
        lambda i: stat(i.astype(np.int64)),
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(boot_seed),
    )
    return float(stat(idx)), float(res.confidence_interval.low), float(res.confidence_interval.high)


def oracle_exits(outputs: ExitOutputs) -> np.ndarray:
    """Per image, its earliest correct output; the final output when none is correct."""
    right = outputs.correct.copy()
    right[-1] = True
    return right.argmax(axis=0)


def oracle(outputs: ExitOutputs) -> dict:
    exits = oracle_exits(outputs)
    cols = np.arange(outputs.num_images)
    return {
        "accuracy": float(outputs.correct.any(axis=0).mean()),
        "cost_fraction": float((outputs.cost[exits] / outputs.cost[-1]).mean()),
        "mean_exit": float(exits.mean() + 1),
        "correct": outputs.correct[exits, cols],
    }


def _rows(outputs: ExitOutputs, per_image: dict, boot_seed: int) -> list[dict]:
    """One row per (name, output) with its mean over test images and a bootstrap interval."""
    rows = []
    for (metric, output), values in per_image.items():
        v = np.asarray(values, dtype=np.float64)
        est, lo, hi = bootstrap_ci(lambda i, v=v: v[i].mean(), outputs.num_images, boot_seed=boot_seed)
        rows.append({"metric": metric, "output": output, "value": est, "ci_low": lo, "ci_high": hi})
    return rows


def per_image_diagnostics(outputs: ExitOutputs) -> dict:
    """(metric, output) -> a 0/1 value per test image, for every per-image diagnostic."""
    right = outputs.correct
    final = right[-1]
    out = {}
    ex = oracle_exits(outputs)
    out[("oracle_accuracy", "any")] = right.any(axis=0)
    out[("oracle_cost_fraction", "any")] = outputs.cost[ex] / outputs.cost[-1]
    out[("final_accuracy", outputs.names[-1])] = final
    earlier = right[:-1].any(axis=0)
    out[("wasteful", "any early")] = earlier & final
    out[("destructive", "any early")] = earlier & ~final
    for k, name in enumerate(outputs.names[:-1]):
        out[("wasteful", name)] = right[k] & final
        out[("destructive", name)] = right[k] & ~final
    lost = right[:-1] & ~right[1:]
    out[("monotonicity_violation", "any step")] = lost.any(axis=0)
    for k in range(outputs.num_outputs - 1):
        step = f"{outputs.names[k]}->{outputs.names[k + 1]}"
        out[("lost", step)] = lost[k]
        out[("gained", step)] = ~right[k] & right[k + 1]
    return out


def diagnostics_table(val: ExitOutputs, test: ExitOutputs, boot_seed: int = 0) -> pd.DataFrame:
    """Every diagnostic on ``test`` (calibration fitted on ``val``), a row per metric and output,
    with a bootstrap interval over test images."""
    rows = _rows(test, per_image_diagnostics(test), boot_seed)
    calib, temps = calibration_table((list(val.probs), val.labels), (list(test.probs), test.labels), list(test.names))
    from elastic_lib.early_exit.policies import calibrated, ece

    for k, (name, t) in enumerate(zip(test.names, temps)):
        p, after = test.probs[k], calibrated(test.probs[k], t)
        for metric, probs in (("ece", p), ("ece_temperature_scaled", after)):
            stat = lambda i, q=probs: ece(q[i], test.labels[i])
            est, lo, hi = bootstrap_ci(stat, test.num_images, boot_seed=boot_seed)
            rows.append({"metric": metric, "output": name, "value": est, "ci_low": lo, "ci_high": hi})
        rows.append({"metric": "temperature", "output": name, "value": t, "ci_low": np.nan, "ci_high": np.nan})
    out = pd.DataFrame(rows)
    out.insert(0, "split", "test")
    return out


def class_exit_rates(decision: Decision, outputs: ExitOutputs, class_names=None) -> pd.DataFrame:
    """Per class: the share of its test images that stop at each output, and the mean exit."""
    k = outputs.num_outputs
    rows = []
    for c in np.unique(outputs.labels):
        sel = outputs.labels == c
        shares = np.bincount(decision.exits[sel], minlength=k) / sel.sum()
        name = class_names[c] if class_names is not None else str(c)
        rows.append(
            {"class": name, "images": int(sel.sum()), "mean_exit": float(decision.exits[sel].mean() + 1)}
            | dict(zip(outputs.names, shares))
        )
    return pd.DataFrame(rows)
