"""One experiment, step by step: the experiment notebook calls these one per cell.

``Experiment(params)`` validates the parameters and owns the run directory; each step
returns a DataFrame (to show inline) and writes its CSV atomically. ``finish()`` writes
``DONE`` last. ``run(params)`` does every step (scripts, tests, benchmarks).
"""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pandas as pd

from . import complexity, early_exit, metrics, results
from .backbones import get_backbone
from .config import RunConfig
from .data import load_dataset, make_pipeline
from .exits import build_elastic_model, exit_taps, short_output_names
from .training import TrainConfig, fit_two_phase, seed_everything, set_bn_momentum


class Experiment:
    def __init__(self, params: dict | RunConfig):
        self.cfg = params if isinstance(params, RunConfig) else RunConfig.from_dict(dict(params))
        self.cfg.validate()
        self.run_dir = os.path.abspath(self.cfg.run_dir())
        self.model = self.splits = self.history = self.costs = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ setup
    def setup(self) -> str:
        """Seeds + op determinism, a clean run directory, params.yaml."""
        os.makedirs(self.run_dir, exist_ok=True)
        results.clear_run(self.run_dir)
        seed_everything(self.cfg.seed)
        results.write_params(self.run_dir, self.cfg.to_dict())
        return self.run_dir

    def strategy(self):
        """The tf.distribute strategy, created once (Keras refuses to mix strategy objects)."""
        import tensorflow as tf

        if getattr(self, "_strategy", None) is None:
            self._strategy = (tf.distribute.MirroredStrategy() if self.cfg.strategy == "mirrored"
                              else tf.distribute.get_strategy())
        return self._strategy

    def load_data(self):
        c = self.cfg
        self.splits = load_dataset(c.dataset, os.path.expanduser(c.data_dir) or None, c.label_mode, c.val_fraction,
                                   c.seed, c.limit_per_class, c.test_limit_per_class)
        return self.splits

    def build_model(self):
        c = self.cfg
        with self.strategy().scope():
            self.model = build_elastic_model(c.backbone, self.splits.num_classes, c.image_size, c.exit_spec,
                                             c.final_head, c.weights_arg, c.dropout)
        set_bn_momentum(self.model, c.bn_momentum)
        self.costs = complexity.complexity_frame(self.model)
        results.write_csv(self.run_dir, "complexity.csv", self.costs)
        return self.model

    def pipeline(self, split: str, shuffle: bool = False):
        c, s = self.cfg, self.splits
        x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
        return make_pipeline(x, y, c.image_size, get_backbone(c.backbone).preprocess, c.batch_size,
                             len(self.model.outputs), shuffle=shuffle, seed=c.seed, augment=c.augment and shuffle)

    # ------------------------------------------------------------ train
    def train(self, verbose: int = 0) -> pd.DataFrame:
        c = self.cfg
        tc = TrainConfig(phase1_epochs=c.phase1_epochs, phase2_epochs=c.phase2_epochs, learning_rate=c.learning_rate,
                         phase2_learning_rate=c.phase2_learning_rate, momentum=c.momentum, loss_weights=c.loss_weights,
                         reduce_lr_patience=c.reduce_lr_patience, min_lr=c.min_lr,
                         early_stopping_patience=c.early_stopping_patience, jit_compile=c.jit_compile, verbose=verbose)
        t0 = time.perf_counter()
        self.history = fit_two_phase(self.model, self.pipeline("train", shuffle=True), self.pipeline("val"), tc,
                                     checkpoint_dir=os.path.join(self.run_dir, "checkpoints"),
                                     strategy=self.strategy() if c.strategy != "default" else None)
        self.timings["train_s"] = time.perf_counter() - t0
        shutil.rmtree(os.path.join(self.run_dir, "checkpoints"), ignore_errors=True)  # best weights are restored
        tmp = os.path.join(self.run_dir, ".tmp_model.weights.h5")
        self.model.save_weights(tmp)
        os.replace(tmp, os.path.join(self.run_dir, "model.weights.h5"))
        results.write_csv(self.run_dir, "history.csv", self.history)
        return self.history

    # ------------------------------------------------------------ evaluate
    def evaluate(self) -> pd.DataFrame:
        """Every output on the test split (and top-1 on validation, for model selection)."""
        names = short_output_names(self.model)
        exits_df, per_class, confusion, self.test_probs, self.y_test = metrics.evaluate(
            self.model, self.pipeline("test"), self.splits.class_names)
        self.val_probs, self.y_val = metrics.predict_outputs(self.model, self.pipeline("val"))
        exits_df.insert(1, "tap_layer", exit_taps(self.model))
        exits_df["val_top1_err_pct"] = [100 * (1 - (p.argmax(1) == self.y_val).mean()) for p in self.val_probs]
        keep = ["output", "depth_index", "depth_layers", "params_to_output", "kernel_macs_to_output", "macs_to_output",
                "flops_to_output", "kernel_macs_fraction_of_final", "micronet_score"]
        exits_df = exits_df.merge(self.costs[keep], on="output")
        self.exits = exits_df
        self.per_class, self.confusion = per_class, confusion
        results.write_csv(self.run_dir, "exits.csv", exits_df, ["depth_index"])
        results.write_csv(self.run_dir, "per_class.csv", per_class, ["output", "class_index"])
        results.write_csv(self.run_dir, "confusion.csv", confusion.reset_index())
        assert names == list(exits_df["output"])
        return exits_df

    def worst_classes(self, by: str = "top1_acc", n: int = 10) -> pd.DataFrame:
        return metrics.worst_classes(self.per_class, "final", n, by)

    # ------------------------------------------------------------ early exit
    def early_exit(self) -> pd.DataFrame:
        """Threshold sweeps (chosen on val, applied to test), the selected policies side by
        side with the fixed cut, and exit rates. Writes early_exit*.csv and exit_rates.csv."""
        c = self.cfg
        if len(self.model.outputs) < 2:
            return pd.DataFrame()
        val, test = (self.val_probs, self.y_val), (self.test_probs, self.y_test)
        sweeps = pd.concat([early_exit.sweep(val, test, self.costs, crit) for crit in early_exit.CRITERIA],
                           ignore_index=True)
        val_acc = np.array([(p.argmax(1) == self.y_val).mean() for p in self.val_probs])
        test_acc = np.array([(p.argmax(1) == self.y_test).mean() for p in self.test_probs])
        final_flops = float(self.costs["flops_to_output"].iloc[-1])
        final_kmacs = float(self.costs["kernel_macs_to_output"].iloc[-1])
        rows, rates = [], []

        def add(policy, threshold, chosen_test, val_a, cost_col):
            out = early_exit.policy_outcome(self.test_probs, self.y_test, chosen_test)
            flops = float(self.costs[f"flops_{cost_col}"].to_numpy()[chosen_test].mean())
            kmacs = float(self.costs[f"kernel_macs_{cost_col}"].to_numpy()[chosen_test].mean())
            rows.append({"policy": policy, "threshold": threshold, "val_acc": val_a, "test_acc": out["accuracy"],
                         "test_drop_pts": 100 * (test_acc[-1] - out["accuracy"]),
                         "expected_flops": flops, "expected_kernel_macs": kmacs,
                         "flops_ratio_vs_final": final_flops / flops, "kernel_macs_ratio_vs_final": final_kmacs / kmacs,
                         "mean_exit": float(chosen_test.mean() + 1)})
            rates.extend({"policy": policy, "output": n, "exit_rate": float(r)}
                         for n, r in zip(self.costs["output"], out["exit_rates"]))

        n_out = len(self.test_probs)
        add("final", np.nan, np.full(len(self.y_test), n_out - 1), val_acc[-1], "to_output")
        k = early_exit.fixed_cut(val_acc, self.costs, c.target_drop_pct)
        add(f"fixed_cut_{self.costs['output'].iloc[k]}", np.nan, np.full(len(self.y_test), k), val_acc[k], "to_output")
        self.selected = {}
        for crit in early_exit.CRITERIA:
            best = early_exit.select_threshold(sweeps[sweeps["criterion"] == crit], val_acc[-1], c.target_drop_pct)
            self.selected[crit] = float(best["threshold"])
            add(f"dynamic_{crit}", best["threshold"], early_exit.dynamic_exit(self.test_probs, best["threshold"], crit),
                best["val_acc"], "cumulative")
        self.sweeps = sweeps
        self.early_exit_summary = pd.DataFrame(rows)
        self.exit_rates = pd.DataFrame(rates)
        results.write_csv(self.run_dir, "early_exit.csv", sweeps, ["criterion", "threshold"])
        results.write_csv(self.run_dir, "early_exit_summary.csv", self.early_exit_summary)
        results.write_csv(self.run_dir, "exit_rates.csv", self.exit_rates)
        return self.early_exit_summary

    def latency(self) -> pd.DataFrame:
        """Batch-1 latency per output through the real staged forward, and of the dynamic
        policy at the selected threshold (measured speed-up next to the FLOPs ratio)."""
        c = self.cfg
        if c.latency_repeats == 0:  # latency measurement switched off (quick tests)
            self.latency_df = pd.DataFrame(columns=["output", "latency_ms", "latency_std_ms", "speedup_vs_final",
                                                    "flops_ratio_vs_final"])
            results.write_csv(self.run_dir, "latency.csv", self.latency_df)
            return self.latency_df
        x = next(iter(self.pipeline("test")))[0].numpy()
        if len(self.model.outputs) < 2:
            import tensorflow as tf

            fn = tf.function(lambda t: self.model(t, training=False))
            ms, sd = early_exit.time_call(fn, x[:1], repeats=c.latency_repeats)
            table = pd.DataFrame([{"output": "final", "latency_ms": ms, "latency_std_ms": sd,
                                   "speedup_vs_final": 1.0, "flops_ratio_vs_final": 1.0}])
        else:
            staged = early_exit.StagedModel(self.model, c.exit_criterion)
            table = early_exit.latency_table(staged, x[:1], self.costs, c.latency_repeats)
            n_batches = -(-c.latency_images // c.batch_size)
            images = np.concatenate([b[0].numpy() for b in self.pipeline("test").take(n_batches)])
            dyn = early_exit.dynamic_latency(staged, images[:c.latency_images], self.selected[c.exit_criterion],
                                             self.costs)
            table = pd.concat([table, pd.DataFrame([{
                "output": f"dynamic_{c.exit_criterion}", "latency_ms": dyn["dynamic_latency_ms"],
                "latency_std_ms": np.nan, "speedup_vs_final": dyn["measured_speedup"],
                "flops_ratio_vs_final": dyn["flops_ratio"], "threshold": dyn["threshold"],
                "mean_exit": dyn["mean_exit"], "n_images": dyn["n_images"]}])], ignore_index=True)
        self.latency_df = table
        results.write_csv(self.run_dir, "latency.csv", table)
        return table

    def same_depth(self) -> pd.DataFrame:
        """Paper Fig. 6: this run's exit nearest the depth of a complete ``compare_depth_of`` network."""
        c = self.cfg
        if not c.compare_depth_of or len(self.model.outputs) < 2:
            return pd.DataFrame()
        other = build_elastic_model(c.compare_depth_of, self.splits.num_classes, c.image_size, "none", c.final_head)
        depth = int(complexity.complexity_frame(other)["depth_layers"].iloc[-1])
        row = early_exit.nearest_exit_to_depth(self.costs, depth)
        err = self.exits.set_index("output").loc[row["output"]]
        df = pd.DataFrame([{"compare_to": c.compare_depth_of, "compare_depth_layers": depth, "output": row["output"],
                            "tap_layer": row["tap_layer"], "depth_layers": int(row["depth_layers"]),
                            "top1_err_pct": err["top1_err_pct"], "flops_to_output": row["flops_to_output"],
                            "params_to_output": row["params_to_output"]}])
        results.write_csv(self.run_dir, "same_depth.csv", df)
        return df

    # ------------------------------------------------------------ finish
    def summary(self) -> pd.DataFrame:
        m = self.model
        whole = complexity.model_complexity(m, "flops")
        final = self.exits.iloc[-1]
        best = self.exits.loc[self.exits["val_top1_err_pct"].idxmin()]
        lat = getattr(self, "latency_df", pd.DataFrame(columns=["output"])).set_index("output")
        latency_final = float(lat.loc["final", "latency_ms"]) if "final" in lat.index else np.nan
        row = {"num_outputs": len(m.outputs), "total_params": whole["total_params"],
               "trainable_params": whole["trainable_params"], "non_trainable_params": whole["non_trainable_params"],
               "final_params": int(final["params_to_output"]),
               "final_kernel_macs": int(final["kernel_macs_to_output"]), "final_flops": int(final["flops_to_output"]),
               "all_outputs_flops": whole["flops"],
               "final_top1_err_pct": final["top1_err_pct"], "final_top5_err_pct": final["top5_err_pct"],
               "final_macro_f1": final["macro_f1"], "final_loss": final["loss"],
               "best_output": best["output"], "best_top1_err_pct": best["top1_err_pct"],
               "min_exit_top1_err_pct": float(self.exits["top1_err_pct"].min()),
               "final_latency_ms": latency_final, "train_s": self.timings.get("train_s", np.nan),
               "epochs_run": len(self.history) if self.history is not None else 0}
        df = pd.DataFrame([row])
        results.write_csv(self.run_dir, "summary.csv", df)
        return df

    def finish(self) -> str:
        """summary.csv, then DONE (unless the batch driver writes it after saving the notebook)."""
        self.summary()
        if self.cfg.write_done:
            results.mark_done(self.run_dir)
        return self.run_dir


def params_from(namespace: dict) -> dict:
    """The RunConfig fields found in ``namespace`` (the notebook's globals after the
    parameters cell and papermill's injected cell)."""
    import dataclasses

    return {f.name: namespace[f.name] for f in dataclasses.fields(RunConfig) if f.name in namespace}


def run(params: dict | RunConfig, verbose: int = 0) -> Experiment:
    """Every step of the experiment notebook, in order."""
    exp = Experiment(params)
    exp.setup()
    exp.load_data()
    exp.build_model()
    exp.train(verbose=verbose)
    exp.evaluate()
    exp.early_exit()
    exp.latency()
    exp.same_depth()
    exp.finish()
    return exp
