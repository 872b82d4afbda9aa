"""Early exit: error vs. depth, confidence-threshold policies, and a real staged forward.

Thresholds are always chosen on the validation split and then applied to the test split.
The staged forward (``StagedModel``) runs the backbone segment by segment inside one
``tf.function`` with nested ``tf.cond``: it really stops computing at the chosen exit, so
batch-1 latency follows the FLOPs saved.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from elastic_lib.control import backend
from elastic_lib.control.config import CRITERIA, default
from elastic_lib.early_exit.zoo import _check_criterion, confidence
from elastic_lib.models.exits import exit_taps, output_names
from elastic_lib.runtime import compiled_forward


# ---------------------------------------------------------------- policies on stored probabilities
def threshold_to_confidence(threshold: float, criterion: str) -> float:
    """max_prob: exit when max prob >= t; entropy: exit when entropy <= t."""
    return threshold if criterion == "max_prob" else -threshold


def dynamic_exit(probs: list[np.ndarray], threshold: float, criterion: str = default("exit_criterion")) -> np.ndarray:
    """Index of the first output whose confidence passes ``threshold``; the final output
    always accepts."""
    t = threshold_to_confidence(threshold, criterion)
    chosen = np.full(len(probs[0]), len(probs) - 1)
    undecided = np.ones(len(probs[0]), dtype=bool)
    for i, p in enumerate(probs[:-1]):
        stop = undecided & (confidence(p, criterion) >= t)
        chosen[stop] = i
        undecided &= ~stop
    return chosen


def policy_outcome(probs: list[np.ndarray], y: np.ndarray, chosen: np.ndarray) -> dict:
    preds = np.stack([p.argmax(1) for p in probs])[chosen, np.arange(len(y))]
    return {
        "accuracy": float((preds == y).mean()),
        "predictions": preds,
        "exit_rates": np.bincount(chosen, minlength=len(probs)) / len(y),
    }


def default_thresholds(criterion: str, num_classes: int) -> np.ndarray:
    if criterion == "max_prob":
        return np.unique(np.round(np.concatenate([np.linspace(0.0, 1.0, 101), [0.995, 0.999, 0.9999, 1.01]]), 6))
    return np.round(np.linspace(0.0, np.log(num_classes), 101), 6)


def sweep(val: tuple, test: tuple, costs: pd.DataFrame, criterion: str, thresholds=None) -> pd.DataFrame:
    """Accuracy and expected cost (cumulative: prefix + every head evaluated) of the dynamic
    policy for each threshold, on validation and test. ``val``/``test`` are (probs, labels)."""
    (pv, yv), (pt, yt) = val, test
    thresholds = default_thresholds(criterion, pv[0].shape[1]) if thresholds is None else thresholds
    rows = []
    for t in thresholds:
        row = {"criterion": criterion, "threshold": float(t)}
        for split, (p, y) in (("val", (pv, yv)), ("test", (pt, yt))):
            chosen = dynamic_exit(p, t, criterion)
            out = policy_outcome(p, y, chosen)
            row[f"{split}_acc"] = out["accuracy"]
            row[f"{split}_mean_exit"] = float(chosen.mean() + 1)
            for conv in ("kernel_macs", "flops"):
                row[f"{split}_expected_{conv}"] = float(costs[f"{conv}_cumulative"].to_numpy()[chosen].mean())
        for conv in ("kernel_macs", "flops"):
            row[f"test_{conv}_fraction_of_final"] = row[f"test_expected_{conv}"] / float(
                costs[f"{conv}_to_output"].iloc[-1]
            )
        rows.append(row)
    return pd.DataFrame(rows)


def select_threshold(
    sweep_df: pd.DataFrame, final_val_acc: float, target_drop_pct: float = default("target_drop_pct")
) -> pd.Series:
    """Cheapest threshold (by validation expected FLOPs) whose validation accuracy is within
    ``target_drop_pct`` points of the final output's validation accuracy."""
    ok = sweep_df[sweep_df["val_acc"] >= final_val_acc - target_drop_pct / 100 - 1e-12]
    if ok.empty:  # the final output itself always qualifies at the largest threshold
        ok = sweep_df.tail(1)
    return ok.sort_values(["val_expected_flops", "threshold"]).iloc[0]


def fixed_cut(
    val_acc_per_output: np.ndarray, costs: pd.DataFrame, target_drop_pct: float = default("target_drop_pct")
) -> int:
    """Index of the cheapest single output whose validation accuracy is within the target drop."""
    ok = np.flatnonzero(val_acc_per_output >= val_acc_per_output[-1] - target_drop_pct / 100 - 1e-12)
    return int(ok[np.argmin(costs["flops_to_output"].to_numpy()[ok])])


def _policy_row(
    policy: str, threshold: float, chosen: np.ndarray, val_acc: float, test: tuple, costs: pd.DataFrame, cost_kind: str
) -> tuple[dict, list[dict]]:
    """One row of the policy summary (test accuracy, drop, expected cost in both conventions)
    and its exit rates. cost_kind: ``to_output`` (a single fixed output) or ``cumulative``."""
    probs, y = test
    out = policy_outcome(probs, y, chosen)
    final_acc = float((probs[-1].argmax(1) == y).mean())
    row = {
        "policy": policy,
        "threshold": threshold,
        "val_acc": val_acc,
        "test_acc": out["accuracy"],
        "test_drop_pts": 100 * (final_acc - out["accuracy"]),
    }
    for conv in ("flops", "kernel_macs"):
        row[f"expected_{conv}"] = float(costs[f"{conv}_{cost_kind}"].to_numpy()[chosen].mean())
    for conv in ("flops", "kernel_macs"):
        row[f"{conv}_ratio_vs_final"] = float(costs[f"{conv}_to_output"].iloc[-1]) / row[f"expected_{conv}"]
    row["mean_exit"] = float(chosen.mean() + 1)
    rates = [{"policy": policy, "output": n, "exit_rate": float(r)} for n, r in zip(costs["output"], out["exit_rates"])]
    return row, rates


def policy_report(
    val: tuple, test: tuple, costs: pd.DataFrame, target_drop_pct: float = default("target_drop_pct")
) -> dict:
    """Threshold sweeps of every criterion (chosen on validation, applied to test), and the
    selected policies side by side: the final output, the fixed cut, each dynamic criterion.
    ``val``/``test`` are (list of per-output probabilities, labels). Returns ``sweeps``,
    ``summary``, ``exit_rates`` (DataFrames) and ``selected`` ({criterion: threshold})."""
    sweeps = pd.concat([sweep(val, test, costs, crit) for crit in CRITERIA], ignore_index=True)
    val_acc = np.array([(p.argmax(1) == val[1]).mean() for p in val[0]])
    n_test, last = len(test[1]), len(test[0]) - 1
    k = fixed_cut(val_acc, costs, target_drop_pct)
    parts = [
        _policy_row("final", np.nan, np.full(n_test, last), val_acc[-1], test, costs, "to_output"),
        _policy_row(
            f"fixed_cut_{costs['output'].iloc[k]}", np.nan, np.full(n_test, k), val_acc[k], test, costs, "to_output"
        ),
    ]
    selected = {}
    for crit in CRITERIA:
        best = select_threshold(sweeps[sweeps["criterion"] == crit], val_acc[-1], target_drop_pct)
        selected[crit] = float(best["threshold"])
        parts.append(
            _policy_row(
                f"dynamic_{crit}",
                best["threshold"],
                dynamic_exit(test[0], best["threshold"], crit),
                best["val_acc"],
                test,
                costs,
                "cumulative",
            )
        )
    return {
        "sweeps": sweeps,
        "summary": pd.DataFrame([row for row, _ in parts]),
        "exit_rates": pd.DataFrame([r for _, rates in parts for r in rates]),
        "selected": selected,
    }


def nearest_exit_to_depth(costs: pd.DataFrame, depth: int) -> pd.Series:
    """The output whose weighted depth (Conv/Dense layers on the longest path) is nearest ``depth``
    (paper Fig. 6: DenseNet-169's exit vs. a complete DenseNet-121)."""
    i = int(np.argmin(np.abs(costs["depth_layers"].to_numpy() - depth)))
    return costs.iloc[i]


# ---------------------------------------------------------------- real early exit
def tf_confidence(p, criterion: str, axis=None):
    """The policy's confidence of probabilities ``p`` (traced TensorFlow): the max probability, or
    the negative entropy; over all of ``p`` (one image) or along ``axis`` (one value per row)."""
    backend.require_tensorflow("tf_confidence (traced TensorFlow; confidence() is the NumPy one)")
    import tensorflow as tf

    if criterion == "max_prob":
        return tf.reduce_max(p, axis=axis)
    q = tf.clip_by_value(p, 1e-12, 1.0)
    return tf.reduce_sum(q * tf.math.log(q), axis=axis)


class StagedModel:
    """The elastic model cut at its taps: segment_i (tap_{i-1} -> tap_i), head_i (tap_i -> exit i)
    and the tail (last tap -> final output). Needs every tap to be a cut point of the graph
    (true for every registry default)."""

    def __init__(self, model: keras.Model, criterion: str = default("exit_criterion")):
        _check_criterion(criterion)
        taps = exit_taps(model)[:-1]
        outs = output_names(model)
        if not taps:
            raise ValueError("the model has no exits; build it with exits='all' for early exit")
        self.model, self.criterion, self.n_exits = model, criterion, len(taps)
        tensors = [model.get_layer(t).output for t in taps]
        try:
            self.segments = [keras.Model(model.inputs[0], tensors[0])] + [
                keras.Model(a, b) for a, b in zip(tensors[:-1], tensors[1:])
            ]
            self.heads = [keras.Model(t, model.get_layer(o).output) for t, o in zip(tensors, outs[:-1])]
            self.tail = keras.Model(tensors[-1], model.outputs[-1])
        except ValueError as err:
            raise ValueError(
                f"taps {taps} are not all cut points of the graph (a skip connection crosses "
                f"one), so the model cannot be run stage by stage: {err}"
            ) from err
        self._fixed = {}
        self.graph = backend.name() == "tensorflow"  # the tf.cond forward; elsewhere the host decides
        if not self.graph:
            self._full = compiled_forward(keras.Model(model.inputs[0], model.outputs[-1]))
            self._stages = [(compiled_forward(s), compiled_forward(h)) for s, h in zip(self.segments, self.heads)] + [
                (compiled_forward(self.tail), None)
            ]
            return
        import tensorflow as tf

        spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], tf.float32)
        self._dynamic = tf.function(self._dynamic_graph, input_signature=[spec, tf.TensorSpec([], tf.float32)])
        self._full = tf.function(lambda x: model(x, training=False)[-1], input_signature=[spec])
        self._spec = spec

    def _confidence(self, p):
        return tf_confidence(p, self.criterion)

    def _dynamic_graph(self, x, threshold):
        import tensorflow as tf

        def stage(i, h):
            if i == self.n_exits:
                return tf.constant(i, tf.int32), self.tail(h, training=False)
            h = self.segments[i](h, training=False)
            p = self.heads[i](h, training=False)
            return tf.cond(
                self._confidence(p) >= threshold, lambda: (tf.constant(i, tf.int32), p), lambda: stage(i + 1, h)
            )

        return stage(0, x)

    def predict_dynamic(self, x, threshold: float):
        """(exit index, probabilities) for one image (batch of 1); index n_exits = final. On
        TensorFlow one compiled graph with nested ``tf.cond``; on another backend each segment and
        head is compiled on its own and the host compares the confidence with the threshold."""
        if not self.graph:
            return self._predict_on_host(np.asarray(x, np.float32), threshold)
        import tensorflow as tf

        i, p = self._dynamic(
            tf.convert_to_tensor(x, tf.float32),
            tf.constant(threshold_to_confidence(threshold, self.criterion), tf.float32),
        )
        return int(i), p.numpy()

    def _predict_on_host(self, x, threshold: float):
        h = x
        for i, (segment, head) in enumerate(self._stages):
            h = segment(h)
            if head is None:
                return i, to_numpy(h)
            p = to_numpy(head(h))
            if confidence(p[0], self.criterion) >= threshold_to_confidence(threshold, self.criterion):
                return i, p
        raise AssertionError("unreachable: the tail always answers")

    def fixed(self, k: int):
        """Compiled function computing only output ``k`` (0-based; n_exits = final)."""
        if not self.graph and k not in self._fixed:
            out = self.model.get_layer(output_names(self.model)[k]).output
            self._fixed[k] = compiled_forward(keras.Model(self.model.inputs[0], out))
        if k not in self._fixed:
            import tensorflow as tf

            def fn(x):
                h = x
                for seg in self.segments[: min(k, self.n_exits - 1) + 1]:
                    h = seg(h, training=False)
                return self.heads[k](h, training=False) if k < self.n_exits else self.tail(h, training=False)

            self._fixed[k] = tf.function(fn, input_signature=[self._spec])
        return self._fixed[k]

    def full(self, x):
        return self._full(x)


def to_numpy(out):
    """A backend's result (one tensor or a list) as NumPy: waits for the device to finish."""
    if isinstance(out, (list, tuple)):
        return [to_numpy(o) for o in out]
    return np.asarray(keras.ops.convert_to_numpy(out))


def time_call(fn, x, warmup: int = 3, repeats: int = 20) -> tuple[float, float]:
    """Mean and std latency (ms) of ``fn(x)`` after warm-up, synchronising on the result."""
    for _ in range(warmup):
        to_numpy(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        to_numpy(fn(x))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.mean(times)), float(np.std(times))


def latency_table(staged: StagedModel, x_one: np.ndarray, costs: pd.DataFrame, repeats: int = 20) -> pd.DataFrame:
    """Batch-1 latency of computing each output alone (staged prefix + its head), and of the
    whole elastic model (every output) in one call; speed-ups and FLOPs ratios are relative to
    computing the final output alone."""
    timed = [time_call(staged.fixed(k), x_one, repeats=repeats) for k in range(staged.n_exits + 1)]
    final_ms = timed[-1][0]
    final_flops = float(costs["flops_to_output"].iloc[-1])
    rows = [
        {
            "output": costs["output"].iloc[k],
            "latency_ms": ms,
            "latency_std_ms": sd,
            "speedup_vs_final": final_ms / ms,
            "flops_ratio_vs_final": final_flops / float(costs["flops_to_output"].iloc[k]),
        }
        for k, (ms, sd) in enumerate(timed)
    ]
    full_ms, full_sd = time_call(staged.full, x_one, repeats=repeats)
    rows.append(
        {
            "output": "all_outputs_one_call",
            "latency_ms": full_ms,
            "latency_std_ms": full_sd,
            "speedup_vs_final": final_ms / full_ms,
            "flops_ratio_vs_final": final_flops / float(costs["flops_cumulative"].iloc[-1]),
        }
    )
    return pd.DataFrame(rows)


def dynamic_latency(
    staged: StagedModel, images: np.ndarray, threshold: float, costs: pd.DataFrame, warmup: int = 3
) -> dict:
    """Mean per-image latency of the real dynamic policy vs. computing the final output alone,
    over ``images`` (each fed as a batch of one), with the measured speed-up next to the FLOPs ratio."""
    final = staged.fixed(staged.n_exits)
    never = np.inf if staged.criterion == "max_prob" else -np.inf  # no exit passes: every stage runs (and compiles)
    for _ in range(warmup):
        staged.predict_dynamic(images[:1], never)
        staged.predict_dynamic(images[:1], threshold)
        to_numpy(final(images[:1]))
    dyn, full, exits = [], [], []
    for img in images:
        x = img[None]
        t0 = time.perf_counter()
        i, _ = staged.predict_dynamic(x, threshold)
        dyn.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        to_numpy(final(x))
        full.append(time.perf_counter() - t0)
        exits.append(i)
    exits = np.asarray(exits)
    expected = float(costs["flops_cumulative"].to_numpy()[exits].mean())
    return {
        "threshold": threshold,
        "criterion": staged.criterion,
        "n_images": len(images),
        "dynamic_latency_ms": 1e3 * float(np.mean(dyn)),
        "final_latency_ms": 1e3 * float(np.mean(full)),
        "measured_speedup": float(np.mean(full) / np.mean(dyn)),
        "flops_ratio": float(costs["flops_to_output"].iloc[-1]) / expected,
        "mean_exit": float(exits.mean() + 1),
    }


def latency_report(
    model: keras.Model,
    x_one: np.ndarray,
    images: np.ndarray,
    costs: pd.DataFrame,
    criterion: str,
    threshold: float | None,
    repeats: int,
) -> pd.DataFrame:
    """The run's latency table: batch-1 latency of every output computed alone through the
    staged forward and of the whole model in one call, then the dynamic policy at ``threshold``
    over ``images``; a model without exits gets its final output only."""
    if len(model.outputs) < 2:
        ms, sd = time_call(compiled_forward(model), x_one, repeats=repeats)
        return pd.DataFrame(
            [
                {
                    "output": "final",
                    "latency_ms": ms,
                    "latency_std_ms": sd,
                    "speedup_vs_final": 1.0,
                    "flops_ratio_vs_final": 1.0,
                }
            ]
        )
    staged = StagedModel(model, criterion)
    table = latency_table(staged, x_one, costs, repeats)
    dyn = dynamic_latency(staged, images, threshold, costs)
    return pd.concat(
        [
            table,
            pd.DataFrame(
                [
                    {
                        "output": f"dynamic_{criterion}",
                        "latency_ms": dyn["dynamic_latency_ms"],
                        "latency_std_ms": np.nan,
                        "speedup_vs_final": dyn["measured_speedup"],
                        "flops_ratio_vs_final": dyn["flops_ratio"],
                        "threshold": dyn["threshold"],
                        "mean_exit": dyn["mean_exit"],
                        "n_images": dyn["n_images"],
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
