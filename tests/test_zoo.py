"""The early-exit policy zoo and the per-run diagnostics (elastic_lib.early_exit.zoo, .diagnostics):
each policy's target or guarantee, on synthetic outputs whose truth is known, and hand-made cases
whose answers are counted by hand. NumPy only: they run on every backend."""

import numpy as np
import pytest

from elastic_lib.early_exit import diagnostics as D
from elastic_lib.early_exit import zoo

pytestmark = pytest.mark.backend


def synthetic(n: int, k: int = 6, classes: int = 10, seed: int = 0) -> zoo.ExitOutputs:
    """Outputs that get better with depth; each image has a difficulty shared by every output, so
    an output's confidence says something about its correctness (as in a trained network)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    hard = rng.uniform(0, 1, n)
    probs = []
    for i in range(k):
        logits = rng.normal(0, 1, (n, classes))
        logits[np.arange(n), y] += 8 * (i + 1) / k * (1.2 - hard)
        probs.append(zoo.softmax(logits))
    return zoo.ExitOutputs(np.stack(probs), y, np.cumsum(np.linspace(1, 2, k)))


def hand(preds: list[list[int]], labels: list[int], cost=None) -> zoo.ExitOutputs:
    """Outputs whose argmax per image is ``preds[k][i]`` (confidence 0.9), 3 classes."""
    p = np.full((len(preds), len(labels), 3), 0.05)
    for k, row in enumerate(preds):
        p[k, np.arange(len(labels)), row] = 0.9
    return zoo.ExitOutputs(p, labels, cost if cost is not None else np.arange(1, len(preds) + 1))


# ---------------------------------------------------------------- targets
@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_each_family_meets_its_budget_on_a_fresh_draw(family):
    """Fitted on one draw, each family's average cost on a large fresh draw stays within the
    budget (up to sampling noise), and is never above the final output's accuracy by magic."""
    val, test = synthetic(4000, seed=1), synthetic(4000, seed=2)
    for budget in (0.55, 0.75):
        policy = zoo.fit(family, val, budget=budget)
        if policy is None:  # patience cannot go below the cost of its second output
            assert family == "patience"
            continue
        on_val, on_test = zoo.outcome(policy.decide(val), val), zoo.outcome(policy.decide(test), test)
        assert on_val["cost_fraction"] <= budget + 1e-9
        assert on_test["cost_fraction"] <= budget + 0.03
        assert on_test["accuracy"] > zoo.single_exits(test)["accuracy"].iloc[0]


def test_max_drop_target_holds_on_validation_and_roughly_on_test():
    val, test = synthetic(4000, seed=3), synthetic(4000, seed=4)
    for family in ("max_prob", "per_exit", "ensemble_weighted"):
        policy = zoo.fit(family, val, max_drop=0.01)
        v, t = zoo.outcome(policy.decide(val), val), zoo.outcome(policy.decide(test), test)
        assert v["accuracy"] >= val.correct[-1].mean() - 0.01 - 1e-9
        assert t["accuracy"] >= test.correct[-1].mean() - 0.03
        assert v["cost_fraction"] < 0.9  # it does exit early


def test_per_exit_is_at_least_the_global_threshold_and_every_single_exit_on_validation():
    """The per-exit family contains the global threshold and every single output, and refinement
    never loses on validation: at any budget it is at least as accurate there as both."""
    val = synthetic(3000, seed=5)
    singles = zoo.single_exits(val)
    for budget in (0.3, 0.45, 0.6, 0.8):
        per_exit = zoo.outcome(zoo.fit("per_exit", val, budget=budget).decide(val), val)
        glob = zoo.outcome(zoo.fit("max_prob", val, budget=budget).decide(val), val)
        best_single = singles[singles["cost_fraction"] <= budget]["accuracy"].max()
        assert per_exit["accuracy"] >= glob["accuracy"] - 1e-12
        assert per_exit["accuracy"] >= best_single - 1e-12
        assert per_exit["cost_fraction"] <= budget + 1e-12


def test_a_target_no_member_meets_is_none_and_two_targets_are_refused():
    val = synthetic(500, seed=6)
    assert zoo.fit("max_prob", val, budget=0.01) is None  # below the first output's cost
    with pytest.raises(ValueError, match="exactly one target"):
        zoo.fit("max_prob", val, budget=0.5, max_drop=0.01)


# ---------------------------------------------------------------- the families' rules, by hand
def test_patience_stops_after_k_agreeing_outputs():
    # image 0: 1 1 1 1 -> patience 1 stops at output 2 (index 1), patience 2 at index 2
    # image 1: 0 1 1 2 -> patience 1 stops at index 2; patience 2 never: the final (index 3)
    out = hand([[1, 0], [1, 1], [1, 1], [1, 2]], [1, 2])
    one = zoo.Policy("patience", {"patience": 1}).decide(out)
    two = zoo.Policy("patience", {"patience": 2}).decide(out)
    assert one.exits.tolist() == [1, 2] and one.preds.tolist() == [1, 1]
    assert two.exits.tolist() == [2, 3] and two.preds.tolist() == [1, 2]


def test_geometric_ensemble_predicts_the_product_of_the_outputs_so_far():
    p = np.array(
        [
            [[0.6, 0.4, 0.0 + 1e-9]],  # output 1 says class 0
            [[0.1, 0.5, 0.4]],  # output 2 says class 1; the product 0.06 : 0.2 : ~0 says 1
        ]
    )
    out = zoo.ExitOutputs(p, [1], [1, 2])
    ens = zoo.Policy("ensemble_geometric", {"threshold": 0.0}).decide(out)  # stops at output 1: class 0
    assert ens.exits.tolist() == [0] and ens.preds.tolist() == [0]
    late = zoo.Policy("ensemble_geometric", {"threshold": 0.99}).decide(out)  # the final: the product
    geo = np.sqrt(p[0, 0] * p[1, 0])
    assert late.exits.tolist() == [1] and late.preds.tolist() == [int(np.argmax(geo))] == [1]


def test_entropy_threshold_is_on_minus_the_entropy():
    out = zoo.ExitOutputs(np.array([[[0.98, 0.01, 0.01]], [[1 / 3, 1 / 3, 1 / 3]]]), [0], [1, 2])
    h = -(0.98 * np.log(0.98) + 2 * 0.01 * np.log(0.01))
    assert zoo.Policy("entropy", {"threshold": -h - 1e-6}).decide(out).exits.tolist() == [0]
    assert zoo.Policy("entropy", {"threshold": -h + 1e-3}).decide(out).exits.tolist() == [1]


# ---------------------------------------------------------------- risk control
def test_risk_controlled_threshold_keeps_its_guarantee_over_many_draws():
    """Learn then Test: over many validation draws, the share whose chosen threshold has a true
    risk (on a 60,000-image population) above eps is at most delta; the naive choice (empirical
    risk at most eps) breaks it, so the check can fail; and the controlled policy does exit early."""
    eps, delta, n, draws = 0.03, 0.1, 400, 300
    pop = synthetic(60_000, seed=100)
    grid = [float(t) for t in zoo.CONFIDENCE_GRID]
    loss, cost = {}, {}
    for t in grid:  # per image: final right and the policy wrong
        d = zoo.Policy("max_prob", {"threshold": t}).decide(pop)
        loss[t] = pop.correct[-1] & (d.preds != pop.labels)
        cost[t] = zoo.outcome(d, pop)["cost_fraction"]
    violations, naive_violations, costs = 0, 0, []
    for seed in range(draws):
        idx = np.random.default_rng(seed).choice(pop.num_images, n, replace=False)
        chosen = zoo.risk_controlled(pop.take(idx), eps, delta).params["threshold"]
        if np.isfinite(chosen):
            violations += loss[chosen].mean() > eps
            costs.append(cost[chosen])
        naive = min(t for t in grid if loss[t][idx].mean() <= eps)
        naive_violations += loss[naive].mean() > eps
    assert violations / draws <= delta
    assert naive_violations / draws > delta
    assert len(costs) > draws / 2 and np.median(costs) < 0.8


def test_risk_control_refuses_a_meaningless_level():
    with pytest.raises(ValueError, match="eps and delta"):
        zoo.risk_controlled(synthetic(100), 0.0, 0.1)


# ---------------------------------------------------------------- stored format and importer
def test_npz_round_trip_and_logits_are_softmaxed(tmp_path):
    val, test = synthetic(50, seed=7), synthetic(40, seed=8)
    zoo.save_npz(tmp_path / "a.npz", val, test)
    v, t = zoo.load_npz(tmp_path / "a.npz")
    assert v.probs.shape == val.probs.shape and t.labels.tolist() == test.labels.tolist()
    assert np.allclose(v.probs, val.probs, atol=1e-3) and v.names == val.names
    logits = np.random.default_rng(0).normal(size=(3, 20, 5)).astype(np.float32)
    np.savez(
        tmp_path / "other.npz",
        val_logits=logits,
        val_labels=np.zeros(20, int),
        test_logits=logits,
        test_labels=np.zeros(20, int),
        cost=[1.0, 2.0, 3.0],
        cost_unit="GFLOPs",
    )
    v, _ = zoo.load_npz(tmp_path / "other.npz")
    assert v.cost_unit == "GFLOPs" and np.allclose(v.probs.sum(-1), 1, atol=1e-5)
    assert np.array_equal(v.preds, logits.argmax(-1))
    np.savez(tmp_path / "bad.npz", val_probs=logits, cost=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="missing"):
        zoo.load_npz(tmp_path / "bad.npz")


def test_outputs_check_their_shapes():
    with pytest.raises(ValueError, match="labels"):
        zoo.ExitOutputs(np.ones((2, 3, 4)) / 4, [0, 1], [1, 2])
    with pytest.raises(ValueError, match="cumulative"):
        zoo.ExitOutputs(np.ones((2, 3, 4)) / 4, [0, 1, 2], [2, 1])


# ---------------------------------------------------------------- diagnostics
def test_diagnostics_counted_by_hand():
    # 4 images, 3 outputs; labels 0 1 2 0
    # img0: right right right        -> oracle exit 1; wasteful at outputs 1, 2
    # img1: right wrong wrong        -> oracle exit 1; destructive at output 1; lost 1->2
    # img2: wrong right right        -> oracle exit 2; wasteful at output 2
    # img3: wrong wrong wrong        -> oracle: final, wrong
    out = hand([[0, 1, 1, 1], [0, 0, 2, 1], [0, 0, 2, 1]], [0, 1, 2, 0], cost=[1, 2, 4])
    o = D.oracle(out)
    assert o["accuracy"] == 0.75 and o["mean_exit"] == (1 + 1 + 2 + 3) / 4
    assert o["cost_fraction"] == pytest.approx((1 + 1 + 2 + 4) / 4 / 4)
    per = D.per_image_diagnostics(out)
    mean = {key: float(np.mean(v)) for key, v in per.items()}
    assert mean[("wasteful", "output01")] == 0.25 and mean[("destructive", "output01")] == 0.25
    assert mean[("wasteful", "output02")] == 0.5 and mean[("destructive", "output02")] == 0.0
    assert mean[("wasteful", "any early")] == 0.5 and mean[("destructive", "any early")] == 0.25
    assert mean[("lost", "output01->output02")] == 0.25 and mean[("gained", "output01->output02")] == 0.25
    assert mean[("monotonicity_violation", "any step")] == 0.25


def test_diagnostics_table_has_intervals_around_its_values_and_calibration_helps():
    val, test = synthetic(1500, seed=9), synthetic(1500, seed=10)
    tab = D.diagnostics_table(val, test)
    # means of a 0/1 value per image sit inside their percentile interval; ECE is biased upwards on
    # resamples (fewer images per bin), so its interval may lie just above it: not checked here
    with_ci = tab.dropna(subset=["ci_low"])
    with_ci = with_ci[~with_ci["metric"].str.startswith("ece")]
    assert ((with_ci["ci_low"] <= with_ci["value"] + 1e-12) & (with_ci["value"] <= with_ci["ci_high"] + 1e-12)).all()
    assert (with_ci["ci_high"] - with_ci["ci_low"] > 0).any()
    final = test.names[-1]
    ece = tab[(tab["output"] == final) & tab["metric"].str.startswith("ece")].set_index("metric")["value"]
    assert ece["ece_temperature_scaled"] < ece["ece"]  # these synthetic outputs are overconfident late
    oracle = tab[tab["metric"] == "oracle_accuracy"]["value"].iloc[0]
    assert oracle >= test.correct.mean(axis=1).max()


def test_class_exit_rates_sum_to_one_per_class():
    val = synthetic(600, seed=11)
    d = zoo.Policy("max_prob", {"threshold": 0.8}).decide(val)
    rates = D.class_exit_rates(d, val)
    assert np.allclose(rates[list(val.names)].sum(axis=1), 1.0)
    assert rates["images"].sum() == val.num_images


# ---------------------------------------------------------------- curves across seeds
def test_exit_curves_over_seeds_bands_paired_tests_and_the_single_exit_check(tmp_path):
    from elastic_lib.analysis import exit_curves

    dirs = []
    for seed in range(3):
        d = tmp_path / f"run{seed}"
        d.mkdir()
        zoo.save_npz(d / "outputs.npz", synthetic(800, seed=20 + seed), synthetic(800, seed=30 + seed))
        dirs.append(str(d))
    (tmp_path / "no_outputs").mkdir()  # a run made before outputs were stored: left out
    res = exit_curves.analyse(
        [*dirs, str(tmp_path / "no_outputs")], families=("max_prob", "per_exit"), budgets=(0.3, 0.45, 0.6, 0.8, 1.0)
    )
    assert res["runs"] == ["run0", "run1", "run2"]
    c = res["curves"]
    assert (c["runs"] == 3).all()
    assert ((c["seed_low"] <= c["test_accuracy"]) & (c["test_accuracy"] <= c["seed_high"])).all()
    assert ((c["image_low"] < c["test_accuracy"]) & (c["test_accuracy"] < c["image_high"])).all()
    paired = res["paired"]
    assert set(paired["family"]) == {"per_exit"} and (paired["runs"] == 3).all()
    assert paired["mcnemar_p"].between(0, 1).all()
    # the mean difference is the mean over runs of each run's accuracy difference
    row = paired.iloc[-1]
    t = res["per_run"]
    at = t[t["budget"] == row["budget"]].pivot(index="run", columns="family", values="test_accuracy")
    assert row["diff_points"] == pytest.approx(100 * (at["per_exit"] - at["max_prob"]).mean())
    vs = res["versus_single_exits"]
    assert len(vs) >= 4 and vs["at_least_as_accurate"].dtype == bool
    fig = exit_curves.figure(res["curves"], res["singles"], res["cost_unit"], "t", "caption")
    assert fig.axes[0].get_xlabel().endswith("kernel MACs)")
    assert exit_curves.analyse([str(tmp_path / "no_outputs")]) is None


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_the_aggregations_one_sweep_per_family_fits_what_zoo_fit_fits(family):
    """The aggregation's curves sweep a family's candidates on validation once for all budgets
    (``zoo.fit_budgets``): the same members as fitting each budget on its own."""
    val = synthetic(400, seed=41)
    budgets = (0.05, 0.3, 0.55, 0.8, 1.0)
    fitted = zoo.fit_budgets(family, val, budgets)
    for b in budgets:
        alone = zoo.fit(family, val, budget=b)
        if alone is None:
            assert fitted[b] is None
        else:
            assert fitted[b].describe() == alone.describe()
            assert np.array_equal(fitted[b].decide(val).exits, alone.decide(val).exits)


# ---------------------------------------------------------------- latency budget (measured costs)
class FakeCascade:
    """Stands for ``serving.TFLiteCascade``: an image is its index; stage k returns output k's
    stored probabilities for it; every stage call is counted."""

    def __init__(self, outputs: zoo.ExitOutputs):
        self.n_exits = outputs.num_outputs - 1
        self.calls = 0
        self.stages = [self._stage(k, outputs.probs[k]) for k in range(self.n_exits)]
        self.tail = self._stage(self.n_exits, outputs.probs[-1])

    def _stage(self, k, probs):
        def run(h):
            self.calls += 1
            return h, probs[int(h[0, 0])][None]

        return run if k < self.n_exits else (lambda h: (run(h)[1],))


def test_the_cascade_leaves_each_image_where_the_fitted_policy_says():
    """The latency model's premise: a per-exit policy run on the cascade stops every image at the
    output ``Policy.decide`` picks from the stored probabilities, so its mean latency is the mean
    of the per-output latencies at those outputs."""
    from elastic_lib.early_exit import latency_budget as lb

    val, test = synthetic(600, seed=51), synthetic(600, seed=52)
    ms = np.array([0.1, 0.25, 0.3, 0.5, 0.8, 1.0])
    policy = lb.fit(val, ms, budget_ms=0.45)
    timed = lb.with_latency(val, ms)
    assert zoo.outcome(policy.decide(timed), timed)["mean_cost"] <= 0.45 + 1e-12
    images = np.arange(len(test.labels), dtype=np.float32)[:, None]
    cascade = FakeCascade(test)
    mean_ms, exits = lb.policy_latency(cascade, policy, images)
    decided = policy.decide(lb.with_latency(test, ms)).exits
    assert np.array_equal(exits, decided) and len(set(exits)) > 2
    assert cascade.calls == int((decided + 1).sum())  # j + 1 stage calls to leave at output j
    assert lb.predicted_ms(policy, test, ms) == pytest.approx(ms[decided].mean())
    assert mean_ms > 0


def test_output_latencies_stop_every_image_at_each_output_in_turn():
    from elastic_lib.early_exit import latency_budget as lb

    test = synthetic(20, seed=53)
    cascade = FakeCascade(test)
    images = np.arange(20, dtype=np.float32)[:, None]
    ms = lb.output_latencies(cascade, images, rounds=2)
    k = test.num_outputs
    assert ms.shape == (k,) and (np.diff(ms) >= 0).all() and ms[0] > 0
    # stopping at output j runs j + 1 stages (the final output: every exit stage and the tail)
    assert cascade.calls == 2 * 20 * (sum(range(1, k)) + k)


def test_a_latency_budget_below_the_first_exit_has_no_policy_and_a_bad_one_is_refused():
    from elastic_lib.early_exit import latency_budget as lb

    val, ms = synthetic(200, seed=54), np.linspace(1, 6, 6)
    assert lb.fit(val, ms, budget_ms=0.5) is None
    with pytest.raises(ValueError, match="budget_ms must be positive"):
        lb.fit(val, ms, budget_ms=0)
    with pytest.raises(ValueError, match="per-exit"):
        lb.policy_latency(FakeCascade(val), zoo.Policy("max_prob", {"threshold": 0.5}), np.zeros((2, 1)))
