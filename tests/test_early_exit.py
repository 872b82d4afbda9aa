"""Early-exit policies on hand-made probabilities, and the staged forward on a real model."""

import math

import numpy as np
import pandas as pd
import pytest

from elastic_lib.early_exit.staged import (
    StagedModel,
    confidence,
    default_thresholds,
    dynamic_exit,
    fixed_cut,
    nearest_exit_to_depth,
    policy_outcome,
    select_threshold,
    sweep,
)

# 3 outputs (2 exits + final) x 4 samples
P_EXIT0 = np.array([[0.90, 0.05, 0.05], [0.50, 0.30, 0.20], [0.40, 0.40, 0.20], [0.34, 0.33, 0.33]])
P_EXIT1 = np.array([[0.10, 0.80, 0.10], [0.80, 0.10, 0.10], [0.25, 0.50, 0.25], [0.30, 0.40, 0.30]])
P_FINAL = np.array([[0.20, 0.20, 0.60], [0.60, 0.20, 0.20], [0.10, 0.80, 0.10], [0.10, 0.10, 0.80]])
PROBS = [P_EXIT0, P_EXIT1, P_FINAL]
Y = np.array([0, 0, 1, 2])


def H(p):
    return -sum(v * math.log(v) for v in p)


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (0.0, [0, 0, 0, 0]),  # everything passes at the first exit
        (0.5, [0, 0, 1, 2]),  # sample 1: 0.50 >= 0.5 at exit 0; sample 2: 0.50 at exit 1
        (0.75, [0, 1, 2, 2]),  # 0.90 at exit 0, 0.80 at exit 1
        (0.85, [0, 2, 2, 2]),
        (1.01, [2, 2, 2, 2]),  # never confident enough: the final output always accepts
    ],
)
def test_dynamic_exit_max_prob(threshold, expected):
    assert list(dynamic_exit(PROBS, threshold, "max_prob")) == expected


def test_entropy_values_by_hand():
    # entropies (nats) of the exit distributions, for the thresholds below
    assert H(P_EXIT0[0]) == pytest.approx(0.3944, abs=1e-4)
    assert H(P_EXIT0[1]) == pytest.approx(1.0297, abs=1e-4)
    assert H(P_EXIT0[2]) == pytest.approx(1.0549, abs=1e-4)
    assert H(P_EXIT0[3]) == pytest.approx(1.0985, abs=1e-4)
    assert H(P_EXIT1[1]) == pytest.approx(0.6390, abs=1e-4)
    assert H(P_EXIT1[2]) == pytest.approx(1.0397, abs=1e-4)
    assert H(P_EXIT1[3]) == pytest.approx(1.0889, abs=1e-4)
    np.testing.assert_allclose(confidence(P_EXIT0, "entropy"), [-H(p) for p in P_EXIT0])
    np.testing.assert_allclose(confidence(P_EXIT0, "max_prob"), [0.9, 0.5, 0.4, 0.34])


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (0.0, [2, 2, 2, 2]),  # zero entropy is never reached
        (0.5, [0, 2, 2, 2]),  # only 0.394 <= 0.5
        (0.7, [0, 1, 2, 2]),  # 0.639 at exit 1
        (1.035, [0, 0, 2, 2]),  # 1.0297 at exit 0; sample 2 has 1.0549 and 1.0397
        (1.045, [0, 0, 1, 2]),  # 1.0397 at exit 1
        (1.2, [0, 0, 0, 0]),
    ],
)
def test_dynamic_exit_entropy(threshold, expected):
    assert list(dynamic_exit(PROBS, threshold, "entropy")) == expected


def test_unknown_criterion():
    with pytest.raises(ValueError, match="max_prob"):
        dynamic_exit(PROBS, 0.5, "margin")


def test_policy_outcome():
    chosen = np.array([0, 1, 2, 2])
    out = policy_outcome(PROBS, Y, chosen)
    # predictions: exit0 s0 -> 0, exit1 s1 -> 0, final s2 -> 1, final s3 -> 2: all correct
    assert list(out["predictions"]) == [0, 0, 1, 2] and out["accuracy"] == 1.0
    np.testing.assert_allclose(out["exit_rates"], [0.25, 0.25, 0.5])
    out = policy_outcome(PROBS, Y, np.zeros(4, int))  # exit 0 predicts [0, 0, 0, 0]
    assert out["accuracy"] == 0.5
    np.testing.assert_allclose(out["exit_rates"], [1, 0, 0])


COSTS = pd.DataFrame(
    {
        "output": ["exit01", "exit02", "final"],
        "flops_to_output": [10.0, 20.0, 40.0],
        "flops_cumulative": [10.0, 22.0, 44.0],
        "kernel_macs_to_output": [4.0, 9.0, 19.0],
        "kernel_macs_cumulative": [4.0, 10.0, 21.0],
        "depth_layers": [5, 12, 30],
    }
)


def test_sweep_by_hand():
    df = sweep((PROBS, Y), (PROBS, Y), COSTS, "max_prob", thresholds=[0.0, 0.75, 1.01])
    row = df.set_index("threshold").loc[0.75]
    # chosen [0, 1, 2, 2]: all correct; expected cost (10 + 22 + 44 + 44) / 4
    assert row["val_acc"] == row["test_acc"] == 1.0
    assert row["test_expected_flops"] == pytest.approx((10 + 22 + 44 + 44) / 4)
    assert row["test_expected_kernel_macs"] == pytest.approx((4 + 10 + 21 + 21) / 4)
    assert row["test_mean_exit"] == pytest.approx((1 + 2 + 3 + 3) / 4)
    row0 = df.set_index("threshold").loc[0.0]
    assert row0["val_acc"] == 0.5 and row0["val_expected_flops"] == 10.0
    assert df.set_index("threshold").loc[1.01, "val_expected_flops"] == 44.0


def test_default_thresholds():
    t = default_thresholds("max_prob", 10)
    assert t[0] == 0.0 and t[-1] == 1.01 and np.all(np.diff(t) > 0)
    t = default_thresholds("entropy", 10)
    assert t[0] == 0.0 and t[-1] == pytest.approx(math.log(10), abs=1e-6)


SWEEP = pd.DataFrame(
    {
        "threshold": [0.0, 0.5, 0.7, 0.9, 1.01],
        "val_acc": [0.80, 0.88, 0.895, 0.90, 0.90],
        "val_expected_flops": [10.0, 20.0, 30.0, 40.0, 100.0],
    }
)


@pytest.mark.parametrize(
    "final_acc, drop, expected",
    [
        (0.90, 1.0, 0.7),  # >= 0.89: 0.895 (30), 0.90 (40), 0.90 (100) -> cheapest 0.7
        (0.90, 2.0, 0.5),  # >= 0.88
        (0.90, 0.0, 0.9),  # >= 0.90: 0.9 is cheaper than 1.01
        (0.90, 20.0, 0.0),
        (0.99, 0.0, 1.01),  # nothing qualifies: the last (largest) threshold
    ],
)
def test_select_threshold(final_acc, drop, expected):
    assert select_threshold(SWEEP, final_acc, drop)["threshold"] == expected


def test_select_threshold_tie_prefers_lower_threshold():
    df = pd.DataFrame({"threshold": [0.6, 0.4], "val_acc": [0.9, 0.9], "val_expected_flops": [5.0, 5.0]})
    assert select_threshold(df, 0.9, 1.0)["threshold"] == 0.4


def test_fixed_cut():
    acc = np.array([0.50, 0.85, 0.895, 0.90])
    costs = pd.DataFrame({"flops_to_output": [1.0, 2.0, 3.0, 4.0]})
    assert fixed_cut(acc, costs, 1.0) == 2
    assert fixed_cut(acc, costs, 0.0) == 3
    assert fixed_cut(acc, costs, 5.0) == 1
    # not monotone in cost: the cheapest qualifying output wins
    assert fixed_cut(acc, pd.DataFrame({"flops_to_output": [1.0, 2.0, 5.0, 4.0]}), 1.0) == 3


def test_nearest_exit_to_depth():
    assert nearest_exit_to_depth(COSTS, 11)["output"] == "exit02"
    assert nearest_exit_to_depth(COSTS, 100)["output"] == "final"


# ---------------------------------------------------------------- staged forward
# (the by-hand policy tests above are NumPy; these run on every backend)
@pytest.fixture(scope="module")
def staged(mobilenet_elastic):
    return StagedModel(mobilenet_elastic, "max_prob")


@pytest.fixture(scope="module")
def x_one():
    return np.random.default_rng(7).normal(size=(1, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model_probs(mobilenet_elastic, x_one):
    return [np.asarray(p, np.float64) for p in mobilenet_elastic(x_one, training=False)]


@pytest.mark.backend
def test_fixed_equals_model_outputs(staged, model_probs, x_one):
    assert staged.n_exits == 13 and len(model_probs) == 14
    for k in range(staged.n_exits + 1):
        np.testing.assert_allclose(np.asarray(staged.fixed(k)(x_one)), model_probs[k], atol=1e-5, err_msg=str(k))
    np.testing.assert_allclose(np.asarray(staged.full(x_one)), model_probs[-1], atol=1e-5)


@pytest.mark.backend
def test_dynamic_extremes(staged, model_probs, x_one):
    i, p = staged.predict_dynamic(x_one, 0.0)
    assert i == 0
    np.testing.assert_allclose(p, model_probs[0], atol=1e-5)
    i, p = staged.predict_dynamic(x_one, 1.01)
    assert i == staged.n_exits
    np.testing.assert_allclose(p, model_probs[-1], atol=1e-5)


def _between_confidences(conf):
    """A threshold halfway between two neighbouring exit confidences near their median, so that
    float32 vs float64 rounding cannot flip the decision."""
    s = np.sort(conf)
    j = len(s) // 2
    t = (s[j - 1] + s[j]) / 2
    assert np.min(np.abs(conf - t)) > 1e-6
    return float(t)


@pytest.mark.backend
@pytest.mark.parametrize("criterion", ["max_prob", "entropy"])
def test_dynamic_matches_stored_policy(mobilenet_elastic, model_probs, x_one, criterion):
    staged = StagedModel(mobilenet_elastic, criterion)
    sign = 1 if criterion == "max_prob" else -1  # the entropy threshold is on entropy = -confidence
    t = _between_confidences(np.array([sign * confidence(p, criterion)[0] for p in model_probs[:-1]]))
    expected = int(dynamic_exit(model_probs, t, criterion)[0])
    assert 0 < expected < staged.n_exits, "the fixture should give a nontrivial answer"
    i, p = staged.predict_dynamic(x_one, t)
    assert i == expected
    np.testing.assert_allclose(p, model_probs[i], atol=1e-5)


@pytest.mark.backend
def test_staged_model_needs_exits():
    from elastic_lib.models.exits import build_elastic_model

    with pytest.raises(ValueError, match="no exits"):
        StagedModel(build_elastic_model("vgg16", 3, 32, exits="none"))
    with pytest.raises(ValueError, match="criterion"):
        StagedModel(build_elastic_model("vgg16", 3, 32, exits="all"), "margin")
