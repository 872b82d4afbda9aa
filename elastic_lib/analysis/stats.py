"""Uncertainty of an elastic-vs-baseline comparison: over training seeds and over test images.

- ``t_interval``: mean and two-sided confidence interval of paired differences over seeds
  (Student's t, n - 1 degrees of freedom);
- ``mcnemar_exact``: the exact (binomial) McNemar test of two classifiers on the same test images;
- ``paired_bootstrap``: a percentile interval of the seed-averaged error difference, resampling
  test images (the same resample for every seed and both models, so the pairing is kept).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st


def t_interval(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of ``diffs``; low/high are NaN with fewer than two values."""
    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean()) if d.size else float("nan")
    if d.size < 2:
        return mean, float("nan"), float("nan")
    half = _st.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return mean, mean - half, mean + half


def mcnemar_exact(correct_a, correct_b) -> tuple[int, int, float]:
    """(b, c, p): b = images only ``a`` gets right, c = images only ``b`` gets right, p = the
    two-sided exact McNemar p-value (binomial test of b against b + c at 1/2; 1.0 when b + c = 0)."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired test needs the same images: {a.shape} vs {b_.shape}")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(_st.binomtest(b, b + c, 0.5).pvalue)
    return b, c, p


def paired_bootstrap(errors_a, errors_b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mean-over-seeds(error rate of a - error rate of b), in points (%).
    ``errors_a``/``errors_b``: arrays (seeds, images) of 0/1 errors on the same test images."""
    ea, eb = np.atleast_2d(np.asarray(errors_a, dtype=float)), np.atleast_2d(np.asarray(errors_b, dtype=float))
    if ea.shape != eb.shape:
        raise ValueError(f"paired bootstrap needs the same seeds and images: {ea.shape} vs {eb.shape}")
    per_image = (ea - eb).mean(axis=0)  # seed-averaged difference of each image
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_image.size, size=(n_boot, per_image.size))
    boots = 100 * per_image[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
