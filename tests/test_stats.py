"""Paired statistics against values computed by hand or from textbook tables."""

import numpy as np
import pytest

from elastic_lib.analysis import stats


def test_t_interval_matches_the_t_table():
    # differences 1, 2, 3: mean 2, sample sd 1, t(0.975, 2 df) = 4.303 (printed tables) -> 2 -/+ 4.303 / sqrt(3)
    mean, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert lo == pytest.approx(2 - 4.303 / 3**0.5, abs=1e-3) and hi == pytest.approx(2 + 4.303 / 3**0.5, abs=1e-3)
    m1, lo1, hi1 = stats.t_interval([5.0])
    assert m1 == 5.0 and np.isnan(lo1) and np.isnan(hi1)


def test_exact_mcnemar_is_the_binomial_test_of_the_discordant_pairs():
    # 10 images only a gets right, 2 only b: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 158 / 4096
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 8, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 8, bool)
    assert stats.mcnemar_exact(a, b) == (10, 2, pytest.approx(158 / 4096))
    assert stats.mcnemar_exact(a, a)[2] == 1.0  # no discordant pair: no evidence
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar_exact(a, b[:-1])


def test_paired_bootstrap_keeps_the_pairing():
    rng = np.random.default_rng(1)
    e = rng.random((3, 500)) < 0.4
    # the same model against itself: every resample gives exactly 0
    assert stats.paired_bootstrap(e, e) == (0.0, 0.0)
    # b wrong on exactly the images where a is wrong, plus 50 more (10%): every resample's difference is
    # -(share of those 50 in it); the interval holds -10 and lies below 0
    eb = e.copy()
    extra = np.flatnonzero(~e[0])[:50]
    eb[:, extra] = True
    e2 = np.repeat(e[:1], 3, axis=0)
    eb2 = np.repeat(eb[:1], 3, axis=0)
    lo, hi = stats.paired_bootstrap(e2, eb2)
    assert lo < -10 < hi < 0
    assert stats.paired_bootstrap(e2, eb2) == (lo, hi)  # deterministic for its seed
