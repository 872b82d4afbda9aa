"""The aggregated paper-style table from hand-made run directories (golden values written by hand)."""

import pandas as pd
import pytest
import yaml

from elastic_lib.analysis import aggregate


def _run(root, backbone, dataset, variant, seed, clean, paper, params, macs, n_test=100, dirty=False):
    d = root / f"{backbone}__{dataset}__{variant}__seed{seed}"
    d.mkdir(parents=True)
    p = {
        "backbone": backbone,
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "label_mode": "fine",
        "image_size": 32,
        "weights": "",
        "limit_per_class": 0,
        "val_fraction": 0.2,
        "phase1_epochs": 1,
        "phase2_epochs": 5,
    }
    (d / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "parameters": p,
                "plumbing": {"data_dir": "data"},
                "environment": {"git_commit": "abcdef0123", "git_dirty": dirty},
            }
        )
    )
    pd.DataFrame(
        [
            {
                "final_top1_err_pct": clean + 1,
                "best_top1_err_pct": clean,
                "clean_protocol_top1_err_pct": clean,
                "paper_protocol_top1_err_pct": paper,
                "final_top5_err_pct": 1.0,
                "final_macro_f1": 0.5,
                "final_loss": 1.0,
                "final_kernel_macs": macs,
                "final_flops": 2 * macs,
                "final_params": params,
                "total_params": params + 10,
                "trainable_params": params,
                "non_trainable_params": 10,
                "final_latency_ms": 1.0,
                "epochs_run": 4 + seed,
            }
        ]
    ).to_csv(d / "summary.csv", index=False)
    pd.DataFrame([{"output": "final", "n": n_test}]).to_csv(d / "exits.csv", index=False)
    (d / "DONE").write_text("ok\n")


def test_paper_table_layout_values_and_caption(tmp_path):
    prof = tmp_path / "demo"
    for seed, (c, p) in enumerate([(50.0, 48.0), (52.0, 49.0)]):  # two seeds of the elastic CIFAR-10 run
        _run(prof, "mobilenet_0.75", "cifar10", "elastic", seed, c, p, 1000, 6_400_000)
    _run(prof, "mobilenet_0.75", "cifar10", "baseline", 0, 60.0, 59.0, 1000, 6_400_000)
    _run(prof, "mobilenet_0.75", "cifar100", "baseline", 0, 80.0, 79.5, 1090, 6_410_000, dirty=True)
    long = aggregate.long_table(str(prof))
    md = aggregate.paper_table(long).splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert len(header) <= 6 and header[0] == "model"
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in md[2:]}
    assert list(rows) == ["MobileNet (α = 0.75)", "Elastic-MobileNet (α = 0.75)"]  # baseline first, paper names
    # mean ± sample std over the two seeds: clean 51 ± 1.41, paper 48.5 ± 0.71; the paper's Table I 7.82
    assert rows["Elastic-MobileNet (α = 0.75)"][1] == "51.00 ± 1.41 · 48.50 ± 0.71 [7.82]"
    assert rows["MobileNet (α = 0.75)"][1] == "60.00 · 59.00 [10.37]"
    assert rows["MobileNet (α = 0.75)"][2] == "80.00 · 79.50 [38.60]"
    # each dataset's own model: the CIFAR-100 head has more parameters
    assert rows["MobileNet (α = 0.75)"][3] == "6.4 · 6.4" and rows["MobileNet (α = 0.75)"][4] == "1,000 · 1,090"
    assert rows["Elastic-MobileNet (α = 0.75)"][2] == ""  # no CIFAR-100 elastic run
    cap = aggregate.caption("demo", str(prof), long)
    for words in (
        "4 runs",
        "32 px",
        "random init",
        "all training images",
        "CIFAR-10 100",
        "seeds 0, 1",
        "clean protocol",
        "paper protocol",
        "kernel MACs",
        "abcdef0, abcdef0 with uncommitted changes",
        "up to 1 + 5 epochs (phase 1 + phase 2), 4–5 epochs run (early stopping on validation loss)",
    ):
        assert words in cap, words


def test_resnet50_legacy_stands_beside_the_papers_resnet50():
    ref = aggregate.paper_errors().set_index(["backbone", "dataset", "variant"])["paper_err_pct"]
    assert ref[("resnet50_legacy", "cifar10", "baseline")] == ref[("resnet50", "cifar10", "baseline")] == 5.54
    assert ref[("resnet50_legacy", "cifar100", "elastic")] == 24.20


def _predictions(run_dir, wrong: set[int], n: int = 20):
    """predictions.csv of n images with label i % 10; the images in ``wrong`` predicted wrong."""
    labels = [i % 10 for i in range(n)]
    pd.DataFrame(
        {
            "image_index": range(n),
            "label": labels,
            "pred_final": [(lab + 1) % 10 if i in wrong else lab for i, lab in enumerate(labels)],
        }
    ).to_csv(run_dir / "predictions.csv", index=False)


def test_paired_differences_over_seeds_and_images(tmp_path):
    prof = tmp_path / "demo"
    # seed 0: elastic wrong on {0,1}, baseline on {0,2,3,4} -> 10% vs 20%, only elastic right on 3, only baseline on 1
    # seed 1: elastic wrong on {5}, baseline on {5,6,7}  ->  5% vs 15%, only elastic right on 2, only baseline on 0
    for seed, (we, wb) in enumerate([({0, 1}, {0, 2, 3, 4}), ({5}, {5, 6, 7})]):
        _run(prof, "mobilenet_0.75", "cifar10", "elastic", seed, 10, 10, 1000, 1)
        _run(prof, "mobilenet_0.75", "cifar10", "baseline", seed, 20, 20, 1000, 1)
        _predictions(prof / f"mobilenet_0.75__cifar10__elastic__seed{seed}", we)
        _predictions(prof / f"mobilenet_0.75__cifar10__baseline__seed{seed}", wb)
    pairs, per_seed = aggregate.paired_differences(str(prof))
    assert list(per_seed["diff_pts"]) == [-10.0, -10.0]
    assert list(per_seed["only_elastic_right"]) == [3, 2] and list(per_seed["only_baseline_right"]) == [1, 0]
    # exact McNemar by hand: seed 0: 2 * P(X <= 1 | 4, 1/2) = 2 * 5/16; seed 1: 2 * P(X <= 0 | 2, 1/2) = 2 * 1/4
    assert per_seed["mcnemar_p"].tolist() == [0.625, 0.5]
    r = pairs.iloc[0]
    assert (r["n_seeds"], r["elastic_err_mean_pct"], r["baseline_err_mean_pct"], r["diff_mean_pts"]) == (
        2,
        7.5,
        17.5,
        -10,
    )
    assert r["diff_ci95_seeds_low_pts"] == r["diff_ci95_seeds_high_pts"] == -10  # no spread over seeds
    assert r["diff_ci95_images_low_pts"] < -10 < r["diff_ci95_images_high_pts"] and r["mcnemar_p_max"] == 0.625
    text = aggregate.verdict(r)
    # 20 images: the seeds agree exactly, but the per-image interval reaches 0: nothing is claimed
    assert "CIFAR-10" in text and "-10.00 points" in text and "2 seeds" in text and "no difference resolved" in text


def test_the_gain_holds_only_when_seeds_and_images_both_exclude_zero(tmp_path):
    prof = tmp_path / "demo"
    for seed, extra in enumerate([30, 36, 32]):  # 200 images; baseline wrong on elastic's 10 plus 30, 36, 32 more
        _run(prof, "mobilenet_0.75", "cifar10", "elastic", seed, 5, 5, 1000, 1)
        _run(prof, "mobilenet_0.75", "cifar10", "baseline", seed, 20, 20, 1000, 1)
        _predictions(prof / f"mobilenet_0.75__cifar10__elastic__seed{seed}", set(range(10)), n=200)
        _predictions(prof / f"mobilenet_0.75__cifar10__baseline__seed{seed}", set(range(10 + extra)), n=200)
    pairs, per_seed = aggregate.paired_differences(str(prof))
    assert per_seed["diff_pts"].tolist() == [-15.0, -18.0, -16.0]
    r = pairs.iloc[0]  # t interval by hand: -16.33 -/+ 4.303 * 1.528 / sqrt(3) = [-20.13, -12.54]
    assert (r["diff_ci95_seeds_low_pts"], r["diff_ci95_seeds_high_pts"]) == (
        pytest.approx(-20.13, abs=0.01),
        pytest.approx(-12.54, abs=0.01),
    )
    assert r["diff_ci95_seeds_high_pts"] < 0 and r["diff_ci95_images_high_pts"] < 0
    assert "the elastic gain holds" in aggregate.verdict(r)


def test_paired_differences_skip_runs_without_predictions_and_refuse_other_images(tmp_path):
    prof = tmp_path / "demo"
    for seed in (0, 1):
        _run(prof, "mobilenet_0.75", "cifar10", "elastic", seed, 5, 5, 1000, 1)
        _run(prof, "mobilenet_0.75", "cifar10", "baseline", seed, 20, 20, 1000, 1)
    _predictions(prof / "mobilenet_0.75__cifar10__elastic__seed0", {1})
    _predictions(prof / "mobilenet_0.75__cifar10__baseline__seed0", {1, 2})
    _predictions(prof / "mobilenet_0.75__cifar10__elastic__seed1", {1})  # its baseline has none: seed 1 left out
    pairs, per_seed = aggregate.paired_differences(str(prof))
    assert per_seed["seed"].tolist() == [0] and pairs.iloc[0]["n_seeds"] == 1
    assert "1 seed (no interval over seeds)" in aggregate.verdict(pairs.iloc[0])
    _predictions(prof / "mobilenet_0.75__cifar10__baseline__seed1", {1}, n=30)  # other images
    with pytest.raises(ValueError, match="not tested on the same images"):
        aggregate.paired_differences(str(prof))
