"""One experiment, step by step: the experiment notebook calls these one per cell.

``Experiment(params)`` validates the parameters and owns the run directory; each step
returns a DataFrame (to show inline) and writes its CSV atomically. Every attribute a step
fills is declared in ``__init__`` (None until that step ran), and a step whose inputs are
missing says which step to call first. ``finish()`` writes ``DONE`` last. ``run(params)``
does every step (scripts, tests, benchmarks); ``Experiment.from_run_dir`` reloads a finished
run's data and trained model (benchmarks, re-measurements).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import numpy as np
import pandas as pd

from elastic_lib import runtime
from elastic_lib.analysis import metrics, protocols
from elastic_lib.control import backend, environment, provenance, results
from elastic_lib.control.config import ConfigError, RunConfig
from elastic_lib.data.arrays import load_dataset
from elastic_lib.data.pipeline import EpochPlan, augment_pad, first_images, make_input, num_batches
from elastic_lib.early_exit import run_analysis, zoo
from elastic_lib.early_exit import staged as early_exit
from elastic_lib.models import complexity
from elastic_lib.models.backbones import preprocess_input
from elastic_lib.models.exits import build_elastic_model, exit_taps, short_output_names
from elastic_lib.runtime import set_determinism
from elastic_lib.train.training import committed_state, fit_two_phase, set_bn_momentum

PROGRESS = "progress.json"
COST_COLUMNS = [
    "output",
    "depth_index",
    "depth_layers",
    "params_to_output",
    "kernel_macs_to_output",
    "macs_to_output",
    "flops_to_output",
    "kernel_macs_fraction_of_final",
    "micronet_score",
]


class Experiment:
    def __init__(self, params: dict | RunConfig):
        # validated once: from_dict checks a dict, a RunConfig built by hand is checked here
        self.cfg = params.validate() if isinstance(params, RunConfig) else RunConfig.from_dict(dict(params))
        self.run_dir = os.path.abspath(self.cfg.run_dir())
        self.determinism: dict | None = None  # setup()
        self.code: dict | None = None  # setup(): library and notebook hashes at the start
        self.splits = None  # load_data()
        self.model = None  # build_model()
        self.costs: pd.DataFrame | None = None  # build_model()
        self.history: pd.DataFrame | None = None  # train()
        self.exits: pd.DataFrame | None = None  # evaluate()
        self.per_class: pd.DataFrame | None = None  # evaluate()
        self.confusion: pd.DataFrame | None = None  # evaluate()
        self.test_probs = self.y_test = None  # evaluate()
        self.val_probs = self.y_val = None  # evaluate()
        self.policies: dict | None = None  # early_exit(): sweeps, summary, exit_rates, selected
        self.latency_df: pd.DataFrame | None = None  # latency()
        self.zoo: dict | None = None  # exit_analysis(): policies, diagnostics, class_exit_rates ({} when off)
        self.timings: dict[str, float] = {}
        self.resumed: str = ""  # setup(): what a rerun kept of an interrupted one
        self._strategy = None

    def _require(self, step: str, *attrs: str) -> None:
        missing = [a for a in attrs if getattr(self, a) is None]
        if missing:
            raise RuntimeError(
                f"Experiment.{step}() needs {', '.join(missing)}; run the earlier steps first "
                "(setup, load_data, build_model, train, evaluate, early_exit, exit_analysis, latency, finish)"
            )

    # ------------------------------------------------------------ setup
    def setup(self) -> str:
        """Seeds + op determinism, a clean run directory, params.yaml (the experiment's
        parameters, the plumbing, the machine and the determinism settings). The training state
        of an interrupted run with the same parameters (``resume/``) is kept: train() goes on
        from its last finished epoch; with other parameters it is discarded."""
        if self.cfg.refinery_run:  # a missing or mismatched teacher is a clear error before anything runs
            from elastic_lib.train.refinery import check_refinery

            check_refinery(self.cfg.refinery_dir, self.cfg)
        os.makedirs(self.run_dir, exist_ok=True)
        self.code = provenance.code_hashes()  # the code this run starts with (its fingerprint, resume stamp)
        results.clear_run(self.run_dir)
        self._keep_or_drop_resume_state()
        self.determinism = set_determinism(self.cfg.seed, self.cfg.determinism)
        float32 = runtime.set_float32_matmul(self.cfg.allow_tf32)
        results.write_params(
            self.run_dir,
            self.cfg.experiment_params(),
            plumbing=self.cfg.plumbing(),
            determinism=self.determinism,
            environment=environment.record({**runtime.backend_details(), **float32}),
        )
        return self.run_dir

    @property
    def state_dir(self) -> str:
        return os.path.join(self.run_dir, "resume")

    def _keep_or_drop_resume_state(self) -> None:
        """Keep resume/ only when it was left by a run of the same parameters and the same code."""
        stamp = os.path.join(self.state_dir, "parameters.json")
        mine = json.dumps({"parameters": self.cfg.experiment_params(), "code": self.code}, sort_keys=True)
        if os.path.isdir(self.state_dir):
            with contextlib.suppress(FileNotFoundError), open(stamp) as f:
                if f.read() == mine:
                    self.resumed = self._resume_point()
                    return
            results.remove_tree(self.state_dir)
        os.makedirs(self.state_dir)
        results.atomic_write_text(stamp, mine)

    def _resume_point(self) -> str:
        """What an interrupted run left, e.g. "phase1 finished; phase2 at epoch 2" ("": nothing)."""
        done = sorted(f[: -len("_history.csv")] for f in os.listdir(self.state_dir) if f.endswith("_history.csv"))
        states = {d: committed_state(os.path.join(self.state_dir, d)) for d in ("phase1", "phase2")}
        inflight = [f"{d} at epoch {st['epoch']}" for d, st in states.items() if st]
        return "; ".join(([f"{', '.join(done)} finished"] if done else []) + inflight)

    def header(self) -> str:
        """The run's first printed lines: id, seed, devices, and what an interrupted run left."""
        c = self.cfg
        lines = [
            f"run: {c.run_id()} | seed {c.seed} | op determinism on",
            f"devices: {runtime.backend_details().get('devices', '?')} | precision {c.precision}"
            f"{' | XLA' if c.jit_compile else ''}",
        ]
        if self.resumed:
            lines.append(f"resuming an interrupted run: {self.resumed}")
        return "\n".join(lines)

    def strategy(self):
        """How training spreads over devices, set up once. ``data_parallel`` (and its old name
        ``mirrored``): on TensorFlow a ``tf.distribute.MirroredStrategy`` (returned: its scope builds
        and trains the model); on JAX ``keras.distribution.DataParallel`` over every device, set
        globally (None returned). Each step's ``batch_size`` images are split across the devices, so
        the recipe (global batch, learning rate) is the single-device one; the batch must divide
        evenly. ``default``: the backend's default device."""
        if self._strategy is not None:
            return self._strategy if backend.name() == "tensorflow" else None
        parallel = self.cfg.strategy in ("data_parallel", "mirrored")
        if backend.name() == "tensorflow":
            import tensorflow as tf

            self._strategy = tf.distribute.MirroredStrategy() if parallel else tf.distribute.get_strategy()
            return self._strategy
        if parallel and backend.name() == "jax":
            import keras

            devices = keras.distribution.list_devices()
            if self.cfg.batch_size % len(devices):
                raise ConfigError(
                    f"strategy='data_parallel' over {len(devices)} devices needs batch_size divisible by "
                    f"{len(devices)} (got {self.cfg.batch_size})"
                )
            self._strategy = keras.distribution.DataParallel(devices=devices)
            keras.distribution.set_distribution(self._strategy)
        return None

    def load_data(self):
        c = self.cfg
        self.splits = load_dataset(c.dataset, **c.data_options())
        return self.splits

    def build_model(self):
        self._require("build_model", "splits")
        c = self.cfg
        strategy = self.strategy()
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.model = self._build(c.weights_arg)
        set_bn_momentum(self.model, c.bn_momentum)
        self.costs = complexity.complexity_frame(self.model)
        results.write_csv(self.run_dir, "complexity.csv", self.costs)
        return self.model

    def _build(self, weights):
        """The model at the configured precision (mixed_float16: float16 compute, float32
        variables and softmax outputs); the global dtype policy is restored afterwards."""
        import keras

        c = self.cfg
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(c.precision)
        try:
            return build_elastic_model(
                c.backbone,
                self.splits.num_classes,
                c.image_size,
                weights=weights,
                source_size=c.host_image_size(self.splits.x_train.shape[1]),
                **c.model_options(),
            )
        finally:
            keras.config.set_dtype_policy(before)

    @property
    def preprocess(self):
        """``preprocess_input`` of the backbone (native) or InceptionV3's for every backbone
        (inception: scale to [-1, 1], what the original code did)."""
        return preprocess_input("inception_v3" if self.cfg.preprocess == "inception" else self.cfg.backbone)

    def pipeline(self, split: str, shuffle: bool = False, phase: int = 1, first_epoch: int = 0, epochs: int = 1):
        """The input of ``split`` (``input_pipeline``: tf.data or ``pipeline.ArrayBatches``, the same
        batches): unshuffled by default; shuffled (and augmented, with ``augment``) in the order of
        ``EpochPlan(seed, phase)`` for epochs ``first_epoch ..``, as one stream."""
        self._require("pipeline", "splits", "model")
        c, s = self.cfg, self.splits
        x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
        if c.refinery_run:  # soft targets to train on, one-hot labels to select and report on
            y = self.refinery_targets if split == "train" else np.eye(s.num_classes, dtype=np.float32)[y]
        size = c.host_image_size(x.shape[1])
        plan = EpochPlan(len(x), c.seed, phase, shuffle, augment_pad(size) if c.augment and shuffle else 0)
        return make_input(
            c.input_pipeline,
            x,
            y,
            size,
            self.preprocess,
            c.batch_size,
            len(self.model.outputs),
            plan,
            epochs,
            first_epoch,
            workers=c.loader_workers,
        )

    def train_input(self, phase: int, first_epoch: int, epochs: int):
        """``fit_two_phase``'s training stream: (epochs ``first_epoch ..`` of ``phase``, steps per epoch)."""
        return (
            self.pipeline("train", True, phase, first_epoch, epochs),
            num_batches(len(self.splits.y_train), self.cfg.batch_size),
        )

    @property
    def refinery_targets(self) -> np.ndarray:
        """Label refinery: the ``refinery_run``'s ``refinery_output`` probabilities on this run's
        training images (computed once)."""
        if getattr(self, "_refinery_targets", None) is None:
            from elastic_lib.train.refinery import refinery_targets

            c = self.cfg
            teacher = Experiment.from_run_dir(c.refinery_dir)
            self._refinery_targets = refinery_targets(
                c.refinery_dir, teacher, c, self.splits.x_train, self.splits.num_classes, c.refinery_output
            )
        return self._refinery_targets

    @property
    def training_model(self):
        """What ``fit`` trains: the model, or with ``self_distillation`` the same layers with
        every exit also learning the final output's softened predictions (``heads``)."""
        if not self.cfg.self_distillation:
            return self.model
        from elastic_lib.models.heads import with_self_distillation

        return with_self_distillation(self.model, self.cfg.distill_temperature, self.cfg.distill_weight)

    # ------------------------------------------------------------ train
    def train(self, verbose: int = 0) -> pd.DataFrame:
        self._require("train", "splits", "model")
        t0 = time.perf_counter()
        if not os.path.isdir(self.state_dir):  # train() without setup(), e.g. from a script
            self._keep_or_drop_resume_state()
        self.history = fit_two_phase(
            self.training_model,
            self.train_input,
            self.pipeline("val"),
            self.cfg,
            strategy=self.strategy() if self.cfg.strategy != "default" else None,
            verbose=verbose,
            state_dir=self.state_dir,
            test_ds=self.pipeline("test"),
            progress=os.path.join(self.run_dir, PROGRESS),
            test_labels=self.splits.y_test,
        )
        self.timings["train_s"] = time.perf_counter() - t0
        tmp = os.path.join(self.run_dir, ".tmp_model.weights.h5")
        self.model.save_weights(tmp)
        os.replace(tmp, os.path.join(self.run_dir, "model.weights.h5"))
        results.write_csv(self.run_dir, "history.csv", self.history)
        results.write_csv(self.run_dir, "test_history.csv", self.test_history)
        return self.history

    @property
    def test_history(self) -> pd.DataFrame | None:
        """The paper protocol's per-epoch test errors (long form of history's ``test_*`` columns)."""
        return None if self.history is None else protocols.test_history(self.history)

    # ------------------------------------------------------------ evaluate
    def evaluate(self) -> pd.DataFrame:
        """Every output on the test split (and top-1 on validation, for model selection)."""
        self._require("evaluate", "splits", "model", "costs")
        exits_df, self.per_class, self.confusion, self.test_probs, self.y_test = metrics.evaluate(
            self.model, self.pipeline("test"), self.splits.class_names, self.splits.y_test
        )
        self.val_probs, self.y_val = metrics.predict_outputs(self.model, self.pipeline("val"), self.splits.y_val)
        exits_df.insert(1, "tap_layer", exit_taps(self.model))
        exits_df["val_top1_err_pct"] = [100 * (1 - (p.argmax(1) == self.y_val).mean()) for p in self.val_probs]
        if self.history is not None:  # paper protocol, per output: min over phase-2 epochs of the test error
            exits_df = exits_df.merge(protocols.per_output_min(self.test_history), on="output", how="left")
        self.exits = exits_df.merge(self.costs[COST_COLUMNS], on="output")
        assert list(self.exits["output"]) == short_output_names(self.model)
        results.write_csv(self.run_dir, "exits.csv", self.exits, ["depth_index"])
        results.write_csv(self.run_dir, "per_class.csv", self.per_class, ["output", "class_index"])
        results.write_csv(self.run_dir, "confusion.csv", self.confusion.reset_index())
        results.write_csv(self.run_dir, "predictions.csv", self.predictions)
        return self.exits

    @property
    def predictions(self) -> pd.DataFrame:
        """Per test image (in the test split's order): its label and every output's top-1 class;
        the aggregation's paired per-image tests (McNemar, bootstrap) read it."""
        self._require("predictions", "test_probs", "y_test")
        cols = {"image_index": np.arange(len(self.y_test)), "label": self.y_test}
        cols |= {f"pred_{name}": p.argmax(1) for name, p in zip(short_output_names(self.model), self.test_probs)}
        return pd.DataFrame(cols)

    def worst_classes(self, by: str = "top1_acc", n: int = 10) -> pd.DataFrame:
        self._require("worst_classes", "per_class")
        return metrics.worst_classes(self.per_class, "final", n, by)

    # ------------------------------------------------------------ early exit
    def early_exit(self) -> pd.DataFrame:
        """Threshold sweeps (chosen on val, applied to test), the selected policies side by
        side with the fixed cut, and exit rates. Writes early_exit*.csv and exit_rates.csv.
        A baseline (one output) has no early exit: an empty frame."""
        self._require("early_exit", "val_probs", "test_probs", "costs")
        if len(self.model.outputs) < 2:
            self.policies = {
                "sweeps": pd.DataFrame(),
                "summary": pd.DataFrame(),
                "exit_rates": pd.DataFrame(),
                "selected": {},
            }
            return self.policies["summary"]
        self.policies = early_exit.policy_report(
            (self.val_probs, self.y_val), (self.test_probs, self.y_test), self.costs, self.cfg.target_drop_pct
        )
        results.write_csv(self.run_dir, "early_exit.csv", self.policies["sweeps"], ["criterion", "threshold"])
        results.write_csv(self.run_dir, "early_exit_summary.csv", self.policies["summary"])
        results.write_csv(self.run_dir, "exit_rates.csv", self.policies["exit_rates"])
        return self.policies["summary"]

    def exit_analysis(self) -> dict:
        """The early-exit policy zoo and diagnostics (``early_exit.run_analysis``) on every output's
        stored validation and test probabilities: writes outputs.npz (float16, compressed: what any
        policy can be replayed from without the model), exit_policies.csv, exit_diagnostics.csv and
        class_exit_rates.csv; report.md gets their section. Off (``exit_analysis: false``) or for a
        baseline (one output): nothing written, an empty dict."""
        self._require("exit_analysis", "val_probs", "test_probs", "costs")
        if not self.cfg.exit_analysis or len(self.model.outputs) < 2:
            self.zoo = {}
            return self.zoo
        val, test = run_analysis.stored_outputs(
            (self.val_probs, self.y_val), (self.test_probs, self.y_test), self.costs, short_output_names(self.model)
        )
        path = os.path.join(self.run_dir, run_analysis.OUTPUTS_FILE)
        zoo.save_npz(path, val, test)
        stored_val, stored_test = zoo.load_npz(path)  # analysed as stored: anyone can redo it from the file
        c = self.cfg
        self.zoo = run_analysis.analyse(
            stored_val, stored_test, c.target_drop_pct, self.splits.class_names, boot_seed=c.seed
        )
        results.write_csv(self.run_dir, "exit_policies.csv", self.zoo["policies"])
        results.write_csv(self.run_dir, "exit_diagnostics.csv", self.zoo["diagnostics"])
        results.write_csv(self.run_dir, "class_exit_rates.csv", self.zoo["class_exit_rates"])
        return self.zoo

    @property
    def sweeps(self) -> pd.DataFrame:
        self._require("sweeps", "policies")
        return self.policies["sweeps"]

    @property
    def exit_rates(self) -> pd.DataFrame:
        self._require("exit_rates", "policies")
        return self.policies["exit_rates"]

    def latency(self) -> pd.DataFrame:
        """Batch-1 latency per output through the real staged forward, and of the dynamic
        policy at the threshold selected by ``early_exit()`` (measured speed-up next to the
        FLOPs ratio). ``latency_repeats=0`` switches it off (an empty latency.csv)."""
        self._require("latency", "policies", "costs")
        c = self.cfg
        if c.latency_repeats == 0:
            self.latency_df = pd.DataFrame(
                columns=["output", "latency_ms", "latency_std_ms", "speedup_vs_final", "flops_ratio_vs_final"]
            )
        else:
            images = first_images(self.pipeline("test"), c.latency_images)
            threshold = self.policies["selected"].get(c.exit_criterion)
            self.latency_df = early_exit.latency_report(
                self.model,
                images[:1],
                images[: c.latency_images],
                self.costs,
                c.exit_criterion,
                threshold,
                c.latency_repeats,
            )
        results.write_csv(self.run_dir, "latency.csv", self.latency_df)
        return self.latency_df

    def same_depth(self) -> pd.DataFrame:
        """Paper Fig. 6: this run's exit nearest the depth of a complete ``compare_depth_of`` network."""
        c = self.cfg
        if not c.compare_depth_of or len(self.model.outputs) < 2:
            return pd.DataFrame()
        self._require("same_depth", "exits")
        other = build_elastic_model(
            c.compare_depth_of,
            self.splits.num_classes,
            c.image_size,
            exits="none",
            final_head=c.final_head,
            dropout=c.dropout,
        )
        depth = int(complexity.complexity_frame(other)["depth_layers"].iloc[-1])
        row = early_exit.nearest_exit_to_depth(self.costs, depth)
        err = self.exits.set_index("output").loc[row["output"]]
        df = pd.DataFrame(
            [
                {
                    "compare_to": c.compare_depth_of,
                    "compare_depth_layers": depth,
                    "output": row["output"],
                    "tap_layer": row["tap_layer"],
                    "depth_layers": int(row["depth_layers"]),
                    "top1_err_pct": err["top1_err_pct"],
                    "flops_to_output": row["flops_to_output"],
                    "params_to_output": row["params_to_output"],
                }
            ]
        )
        results.write_csv(self.run_dir, "same_depth.csv", df)
        return df

    def report(self) -> str:
        """The analysis report in the Inception-v4 study's layout (``report.md``, Markdown)."""
        from elastic_lib.analysis.report import analysis_report

        self._require("report", "exits", "per_class", "latency_df")
        c, info = self.cfg, environment.machine_info(runtime.backend_details())
        gpus = [d for d in str(info.get("devices", "")).split(", ") if d.startswith("GPU")]
        device = gpus[0] if gpus else f"CPU: {info['cpu_model']}, {info['cpu_count']} cores"
        config = {
            "backbone": c.backbone,
            "variant": c.variant,
            "dataset": c.dataset_label,
            "image size": f"{c.image_size}x{c.image_size}",
            "seed": c.seed,
            "head": c.head,
            **{k.replace("_", " "): v for k, v in c.backbone_options.items()},
            "test images": int(self.exits["n"].iloc[-1]),
        }
        text = analysis_report(c.run_id(), config, self.exits, self.per_class, self.latency_df, device)
        if self.zoo:
            text += "\n" + run_analysis.markdown(self.zoo, c.target_drop_pct)
        results.atomic_write_text(os.path.join(self.run_dir, "report.md"), text)
        return text

    # ------------------------------------------------------------ finish
    def summary(self) -> pd.DataFrame:
        self._require("summary", "exits", "latency_df", "history")
        whole = complexity.model_complexity(self.model)
        final = self.exits.iloc[-1]
        best = self.exits.loc[self.exits["val_top1_err_pct"].idxmin()]
        lat = self.latency_df.set_index("output")
        row = {
            "num_outputs": len(self.model.outputs),
            "total_params": whole["total_params"],
            "trainable_params": whole["trainable_params"],
            "non_trainable_params": whole["non_trainable_params"],
            "final_params": int(final["params_to_output"]),
            "final_kernel_macs": int(final["kernel_macs_to_output"]),
            "final_flops": int(final["flops_to_output"]),
            "all_outputs_flops": whole["flops"],
            "final_top1_err_pct": final["top1_err_pct"],
            "final_top5_err_pct": final["top5_err_pct"],
            "final_macro_f1": final["macro_f1"],
            "final_loss": final["loss"],
            "best_output": best["output"],
            "best_top1_err_pct": best["top1_err_pct"],
            "min_exit_top1_err_pct": float(self.exits["top1_err_pct"].min()),
            **protocols.reported(self.exits, self.test_history),
            "final_latency_ms": float(lat.loc["final", "latency_ms"]) if "final" in lat.index else np.nan,
            "train_s": self.timings.get("train_s", np.nan),
            "epochs_run": len(self.history),
            "resumed_from": self.resumed,
        }
        df = pd.DataFrame([row])
        results.write_csv(self.run_dir, "summary.csv", df)
        return df

    def finish(self) -> str:
        """summary.csv, the run's fingerprint (params.yaml: what made it, see provenance), then DONE
        (unless the batch driver writes it after saving the notebook)."""
        self.summary()
        self.report()
        provenance.record(self.run_dir, self.cfg, self.code)
        results.remove_tree(self.state_dir)  # finished: nothing left to resume
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.run_dir, PROGRESS))
        if self.cfg.write_done:
            results.mark_done(self.run_dir)
        return self.run_dir

    # ------------------------------------------------------------ reload
    @classmethod
    def from_run_dir(cls, run_dir: str) -> "Experiment":
        """A finished run's data and trained model, for re-measuring it (no training, nothing
        written): its parameters from params.yaml, its weights from model.weights.h5."""
        params = {**results.read_params(run_dir, with_plumbing=True), "output_dir": run_dir, "write_done": False}
        exp = cls(params)
        exp.load_data()
        exp.model = exp._build(None)
        exp.model.load_weights(os.path.join(run_dir, "model.weights.h5"))
        exp.costs = complexity.complexity_frame(exp.model)
        return exp


def params_from(namespace: dict) -> dict:
    """The RunConfig fields found in ``namespace`` (the notebook's globals after the
    parameters cell and papermill's injected cell)."""
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
    exp.exit_analysis()
    exp.latency()
    exp.same_depth()
    exp.finish()
    return exp
