"""Budgeted early exit and per-exit calibration (elastic_lib.early_exit.policies), on synthetic probabilities."""

import numpy as np
import pandas as pd
import pytest

from elastic_lib.early_exit import policies


def _costs(cum, final):
    return pd.DataFrame({"kernel_macs_cumulative": cum, "kernel_macs_to_output": [c for c in cum[:-1]] + [final]})


def _split(rng, n, sharp):
    """Three outputs of rising accuracy: output k is right with probability 0.5, 0.7, 0.9."""
    y = rng.integers(0, 5, n)
    probs = []
    for acc in (0.5, 0.7, 0.9):
        right = rng.random(n) < acc
        pred = np.where(right, y, (y + 1 + rng.integers(0, 4, n)) % 5)
        logits = rng.normal(0, 1, (n, 5))
        logits[np.arange(n), pred] += sharp * rng.random(n) + 1
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs.append(e / e.sum(1, keepdims=True))
    return probs, y


def test_budgeted_policy_meets_its_budget_on_validation():
    rng = np.random.default_rng(0)
    val, test = _split(rng, 2000, 4.0), _split(rng, 2000, 4.0)
    costs = _costs([10.0, 40.0, 110.0], 100.0)  # stopping at output 2 costs 0.4 of the final's 100
    for budget in (0.1, 0.3, 0.6, 1.1):
        r = policies.budgeted(val, test, costs, budget)
        assert r["val_cost_fraction"] <= budget + 1e-12
        assert 0.1 <= r["test_cost_fraction"] <= 1.1
    with pytest.raises(ValueError, match="below the cheapest exit"):
        policies.budgeted(val, test, costs, 0.05)
    # by hand: budget 0.1 = everyone at exit 1 (threshold 0), accuracy of output 1 on test
    r = policies.budgeted(val, test, costs, 0.1)
    assert r["test_cost_fraction"] == pytest.approx(0.1)
    assert r["test_accuracy"] == pytest.approx((test[0][0].argmax(1) == test[1]).mean())


def test_budgeted_policy_by_hand():
    """Four images, two classes. Exit 1 costs 0.25 of the final output; stopping at the final
    costs 1.25 (exit 1's head included). Exit 1 predicts 0, 0, 1, 0 with confidence 0.9, 0.6, 0.7,
    0.95; the labels are 0, 1, 1, 0 (exit 1 wrong on image 1 only); the final output is always right.
    Thresholds <= 0.6: everyone exits at 1 (cost 0.25, accuracy 0.75); (0.6, 0.7]: image 1 goes on
    (cost 0.5, accuracy 1); higher thresholds cost more for the same accuracy."""
    y = np.array([0, 1, 1, 0])
    exit1 = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    final = np.eye(2)[y]
    split = ([exit1, final], y)
    costs = _costs([25.0, 125.0], 100.0)
    r = policies.budgeted(split, split, costs, 0.75)
    assert (r["val_accuracy"], r["val_cost_fraction"]) == (1.0, pytest.approx(0.5)) and 0.6 < r["threshold"] <= 0.7
    cheap = policies.budgeted(split, split, costs, 0.3)
    assert (cheap["val_accuracy"], cheap["test_cost_fraction"]) == (0.75, pytest.approx(0.25))
    with pytest.raises(ValueError, match="below the cheapest exit"):
        policies.budgeted(split, split, costs, 0.2)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 1, 1, 0])
    # 15 bins: 0.9 alone (right), 0.8 alone (wrong), 0.7 alone (right), 0.6 alone (right)
    expected = 0.25 * (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6))
    assert policies.ece(probs, y) == pytest.approx(expected)


def test_temperature_is_recovered_from_overconfident_probabilities():
    """Labels drawn from softmax(z / 2); the model reports softmax(z): the fitted T is about 2,
    and scaling lowers the ECE and the NLL."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 10))
    true = np.exp(z / 2) / np.exp(z / 2).sum(1, keepdims=True)
    y = np.array([rng.choice(10, p=p) for p in true])
    reported = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    t = policies.fit_temperature(reported[:10000], y[:10000])
    assert t == pytest.approx(2.0, rel=0.05)
    table, temps = policies.calibration_table(
        ([reported[:10000]], y[:10000]), ([reported[10000:]], y[10000:]), ["final"]
    )
    row = table.iloc[0]
    assert row["test_ece_calibrated"] < row["test_ece"] / 3 and row["test_nll_calibrated"] < row["test_nll"]
    np.testing.assert_allclose(policies.calibrated(reported, 1.0), reported, rtol=1e-9)


def test_cost_curves_with_and_without_temperatures():
    rng = np.random.default_rng(1)
    val, test = _split(rng, 500, 4.0), _split(rng, 500, 4.0)
    _, temps = policies.calibration_table(val, test, ["exit01", "exit02", "final"])
    curves = policies.cost_curves(test, _costs([10.0, 40.0, 110.0], 100.0), temps)
    assert set(curves["probabilities"]) == {"as trained", "temperature-scaled"}
    assert curves["cost_fraction"].between(0.1, 1.1).all()
