"""Hyperparameter selection reads validation columns only and picks the lowest validation loss."""

import pandas as pd
import yaml

from elastic_lib.analysis import selection


def test_selection_picks_the_lowest_phase2_validation_loss(tmp_path):
    prof = tmp_path / "sweep.yaml"
    prof.write_text(
        yaml.safe_dump(
            {
                "defaults": {"dataset": "digits", "phase1_epochs": 1, "phase2_epochs": 4},
                "grid": {"backbone": ["mobilenet_0.75"], "phase2_learning_rate": [0.01, 0.05]},
            }
        )
    )
    root = tmp_path / "results"
    # val_loss per epoch (epoch 1 = phase 1); test columns deliberately favour the other rate
    curves = {
        "0.01": ([9.0, 3.0, 2.5, 2.6, 2.7], [0.1, 0.5, 0.6, 0.61, 0.6], 0.1),
        "0.05": ([1.0, 2.8, 2.6, 2.55, 2.9], [0.1, 0.55, 0.58, 0.57, 0.5], 0.99),
    }
    for lr, (loss, acc, test_acc) in curves.items():
        d = root / "sweep" / f"mobilenet_0.75__digits__elastic__phase2_learning_rate-{lr}"
        d.mkdir(parents=True)
        pd.DataFrame(
            {
                "epoch": range(1, 6),
                "phase": [1, 2, 2, 2, 2],
                "val_loss": loss,
                "val_final_accuracy": acc,
                "test_final_accuracy": test_acc,
            }
        ).to_csv(d / "history.csv", index=False)
        (d / "DONE").write_text("ok\n")
    df = selection.write(str(prof), str(root))
    # phase 1's 1.0 does not count: 0.01 reaches 2.5 at epoch 3, 0.05 only 2.55
    assert df["phase2_learning_rate"].tolist() == [0.01, 0.05] and df["chosen"].tolist() == [True, False]
    assert df["best_epoch"].tolist() == [3, 4] and df["val_final_top1_err_pct_at_best"].round(6).tolist() == [
        40.0,
        43.0,
    ]
    md = (root / "sweep" / "selection.md").read_text()
    assert "`phase2_learning_rate` = 0.01" in md and "test split is not read" in md and "Incomplete" not in md


def test_selection_averages_over_seeds_instead_of_picking_the_luckiest_run(tmp_path):
    prof = tmp_path / "sweep.yaml"
    prof.write_text(
        yaml.safe_dump(
            {
                "defaults": {"dataset": "digits", "phase1_epochs": 1, "phase2_epochs": 1},
                "grid": {"backbone": ["mobilenet_0.75"], "seed": [0, 1], "phase2_learning_rate": [0.01, 0.05]},
            }
        )
    )
    root = tmp_path / "results"
    best = {("0.01", 0): 2.0, ("0.01", 1): 3.0, ("0.05", 0): 2.2, ("0.05", 1): 2.4}  # means 2.5 vs 2.3
    for (lr, seed), loss in best.items():
        d = root / "sweep" / f"mobilenet_0.75__digits__elastic__seed{seed}__phase2_learning_rate-{lr}"
        d.mkdir(parents=True)
        pd.DataFrame(
            {"epoch": [1, 2], "phase": [1, 2], "val_loss": [5.0, loss], "val_final_accuracy": [0.1, 0.5]}
        ).to_csv(d / "history.csv", index=False)
        (d / "DONE").write_text("ok\n")
    df = selection.selection_table(str(prof), str(root))
    assert set(df.loc[df["chosen"], "phase2_learning_rate"]) == {0.05} and df["chosen"].sum() == 2
