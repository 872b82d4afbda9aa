"""The paper's two-phase recipe: heads only (backbone frozen), then everything.

Loss = weighted sum of the per-output cross-entropies. SGD (momentum per phase), ReduceLROnPlateau
and EarlyStopping on ``val_loss`` in each phase, the best-``val_loss`` weights restored at the end
of each phase (``EarlyStopping(restore_best_weights=True)``); model selection only ever looks at
the validation split. Every option is a ``RunConfig`` field (one place for parameters and
defaults); the ``paper`` profile sets them to the original code's values.

Long runs survive interruption: with a ``state_dir``, ``ResumeState`` checkpoints the model, the
optimizer, the callbacks' state and the epoch's history row after every epoch, and a rerun goes
on from the last finished epoch of the phase it was in (a finished phase is not redone).
"""

from __future__ import annotations

import json
import os
import time

import keras
import numpy as np
import pandas as pd

from elastic_lib.control.config import LOSS_WEIGHT_SCHEMES, RunConfig, default
from elastic_lib.control.results import atomic_write_text, remove_tree
from elastic_lib.models import keras_compat
from elastic_lib.models.exits import is_head_layer, output_names, short_output_names


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""


def loss_weights(n_outputs: int, scheme: str = "uniform") -> list[float]:
    """Per-output loss weights, exits first then the final head (always weight 1).

    uniform: 1 for every output (the paper). depth: the original "weight-Depth",
    w = 1 / (L - depth) with L = n_outputs and depth = 1..L-1 for the exits.
    linear: w = depth / (L - 1) for the exits.
    """
    if scheme not in LOSS_WEIGHT_SCHEMES:
        raise ValueError(f"unknown loss weight scheme {scheme!r}; valid: {LOSS_WEIGHT_SCHEMES}")
    n_exits = n_outputs - 1
    if scheme == "uniform":
        w = [1.0] * n_exits
    elif scheme == "depth":
        w = [1.0 / (n_outputs - d) for d in range(1, n_exits + 1)]
    else:
        w = [d / n_exits for d in range(1, n_exits + 1)]
    return w + [1.0]


def set_bn_momentum(model: keras.Model, momentum: float | None) -> int:
    """Set every BatchNormalization momentum (Keras default 0.99). From scratch with a few
    hundred steps, 0.99 leaves the moving statistics far from the batch statistics, so the
    inference-mode network is near chance; 0.9 follows them within ~50 steps."""
    if not momentum:
        return 0
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            n += 1
    return n


FROZEN_BN_MOMENTUM = 1.0  # moving = moving * 1 + batch * 0: the statistics stay exactly as they are


def set_trainable(model: keras.Model, backbone: bool, frozen_bn: str = default("frozen_bn")) -> None:
    """Backbone trainable or frozen (heads always train).

    frozen_bn (when frozen): ``inference`` = Keras 3, a frozen BatchNorm normalises with its
    moving statistics; ``batch_stats`` = Keras 2.1.5 (the original code), a frozen BatchNorm still
    normalises with the batch's statistics in training, its moving statistics and gamma/beta
    unchanged. Emulated by keeping the layer trainable with gamma/beta not trainable and momentum
    1.0; ``backbone=True`` undoes it (the momentum the layer had before comes back)."""
    for layer in model.layers:
        head = is_head_layer(layer)
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        if is_bn and hasattr(layer, "_elastic_momentum"):  # undo a previous batch_stats freeze
            layer.momentum = layer._elastic_momentum
            del layer._elastic_momentum
            for v in (layer.gamma, layer.beta):
                if v is not None:
                    v.trainable = True
        if is_bn and not backbone and not head and frozen_bn == "batch_stats":
            layer.trainable = True
            layer._elastic_momentum = layer.momentum
            layer.momentum = FROZEN_BN_MOMENTUM
            for v in (layer.gamma, layer.beta):
                if v is not None:
                    v.trainable = False
        else:
            layer.trainable = backbone or head


def output_loss(cfg: RunConfig):
    """Each output's loss: sparse cross-entropy (the paper); the AM-softmax loss for
    ``head="am_softmax"``; with a label refinery, the cross-entropy against soft targets (its
    evaluation splits carry one-hot labels), which is AM-softmax's at margin 0."""
    if cfg.refinery_run:
        return keras.losses.CategoricalCrossentropy()
    if cfg.head == "am_softmax":
        from elastic_lib.models.heads import am_softmax_loss

        return am_softmax_loss(cfg.am_scale, cfg.am_margin)
    return keras.losses.SparseCategoricalCrossentropy()


def compile_model(
    model: keras.Model, lr: float, cfg: RunConfig, metrics: str = "all", momentum: float | None = None
) -> None:
    """SGD(lr, momentum; default ``cfg.momentum``), one loss per output (``output_loss``) weighted
    by ``cfg.loss_weights``; accuracy on every output (``metrics="all"``) or on the final one."""
    n = len(model.outputs)
    acc = [["accuracy"] for _ in range(n)] if metrics == "all" else [[] for _ in range(n - 1)] + [["accuracy"]]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum if momentum is None else momentum),
        loss=[output_loss(cfg) for _ in range(n)],
        loss_weights=loss_weights(n, cfg.loss_weights),
        metrics=acc,
        jit_compile=jit_compile(cfg),
    )


def jit_compile(cfg: RunConfig):
    """``cfg.jit_compile`` (XLA) on TensorFlow, where it is an option; Keras' ``"auto"`` elsewhere:
    on JAX every step is XLA-compiled (uncompiled JAX runs op by op, ~10x slower), on PyTorch eager."""
    from elastic_lib.control.backend import name

    return cfg.jit_compile if name() == "tensorflow" else "auto"


class DivergenceGuard(keras.callbacks.Callback):
    """The one divergence check: stops training when the batch loss is NaN/inf, explodes above
    ``factor`` x the loss of an untrained network at chance (sum over outputs of weight x
    ln(num_classes)), or saturates: above ``saturation`` x ``ceiling``, the most the clipped
    cross-entropy can give (sum of weights x -ln(keras epsilon)), which is where a blown-up network
    ends when its arithmetic does not overflow (JAX at a learning rate of 1e12 stays there, where
    TensorFlow gives NaN). ``fit_two_phase`` then raises ``TrainingDiverged``.

    Reading the loss makes the host wait for the device, so the guard reads it only every
    ``every`` batches (and at the end of each epoch): a GPU runs ahead in between. The batch's own
    loss is recovered from the epoch's running means at two reads."""

    def __init__(
        self,
        chance_loss: float,
        factor: float = 1e4,
        ceiling: float | None = None,
        saturation: float = 0.8,
        every: int = 20,
    ):
        super().__init__()
        self.limit = factor * max(chance_loss, 1.0)
        self.saturated = saturation * ceiling if ceiling else np.inf
        self.every = max(1, int(every))
        self.reason = ""

    def on_epoch_begin(self, epoch, logs=None):
        self._mean, self._seen = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        self._last = batch
        if batch == 0 or (batch + 1) % self.every == 0:
            self._check(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if not self.reason and "loss" in (logs or {}):
            self._check(getattr(self, "_last", 0), logs)

    def _check(self, batch, logs):
        mean = float((logs or {}).get("loss", 0.0))  # Keras logs the epoch's running mean
        seen = getattr(self, "_seen", 0)
        # the mean loss of the batches since the last read (equal batches)
        loss = ((batch + 1) * mean - seen * getattr(self, "_mean", 0.0)) / max(1, batch + 1 - seen)
        self._mean, self._seen = mean, batch + 1
        if not np.isfinite(mean) or mean > self.limit:
            self.reason = f"loss {mean:.4g} at batch {batch} (limit {self.limit:.4g})"
        elif loss > self.saturated:
            self.reason = (
                f"loss {loss:.4g} at batch {batch}, near the clipped cross-entropy's ceiling: the outputs "
                "give the true classes a probability near zero"
            )
        if self.reason:
            self.model.stop_training = True


def _callbacks(cfg: RunConfig):
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=cfg.reduce_lr_factor,
            patience=cfg.reduce_lr_patience,
            min_lr=cfg.min_lr,
            cooldown=cfg.reduce_lr_cooldown,
            verbose=0,
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=cfg.early_stopping_patience,
            min_delta=cfg.early_stopping_min_delta,
            restore_best_weights=True,
        ),
    ]


class TestEveryEpoch(keras.callbacks.Callback):
    """The paper protocol's measurement: every output's test top-1 error after each epoch, added
    to the epoch's logs (``test_<output>_top1_err_pct``) so that it lands in ``history.csv``.
    Only reported, never used to select anything during training."""

    def __init__(self, test_ds, names: list[str], labels=None):
        super().__init__()
        self.test_ds, self.names, self.labels = test_ds, names, labels

    def on_epoch_end(self, epoch, logs=None):
        from elastic_lib.models.exits import predict_outputs

        probs, y = predict_outputs(self.model, self.test_ds, self.labels)
        for name, p in zip(self.names, probs):
            logs[f"test_{name}_top1_err_pct"] = 100.0 * float((p.argmax(1) != y).mean())


def committed_state(folder: str) -> dict | None:
    """The committed epoch's state of a phase folder, or None (nothing to resume, or files
    missing: the phase starts over rather than resume from half a state)."""
    path = os.path.join(folder, "state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        state = json.load(f)
    files = (os.path.join(folder, state["weights"]), os.path.join(folder, "history.csv"))
    return state if all(os.path.isfile(f) for f in files) else None


class ResumeState(keras.callbacks.Callback):
    """Checkpoint after every epoch, resume after an interruption (what Keras' BackupAndRestore
    does, plus the state BackupAndRestore loses: EarlyStopping's and ReduceLROnPlateau's counters
    and best values, EarlyStopping's best weights, and the epoch's history row).

    Files in ``folder`` (one per phase): ``epochN.weights.h5`` (model + optimizer, learning rate
    included), ``es_best.npz`` and ``state.json`` written last, which names the epoch: a kill at
    any moment leaves the previous epoch's consistent state. ``history.csv`` rows beyond the
    committed epoch are dropped on resume. ``progress`` (a path) gets phase, epoch, validation
    accuracy and ETA after every epoch, for ``./run_all.sh`` to show.
    """

    def __init__(self, folder: str, phase: int, epochs: int, es, rlr, progress: str | None = None):
        super().__init__()
        self.folder, self.phase, self.epochs, self.es, self.rlr = folder, phase, epochs, es, rlr
        self.progress = progress
        self.state_path = os.path.join(folder, "state.json")
        self.history_path = os.path.join(folder, "history.csv")
        self.resumed_from = 0
        self._t0 = time.time()
        os.makedirs(folder, exist_ok=True)

    def read_state(self) -> dict | None:
        return committed_state(self.folder)

    def on_train_begin(self, logs=None):
        state = self.read_state()
        self._t0 = time.time()
        # Keras never resets ``_initial_epoch``: a phase-1 resume would make phase 2 (same model,
        # next fit) skip as many epochs. Each phase starts where its own state says, or at 0.
        keras_compat.set_initial_epoch(self.model, None)
        if state is None:
            if os.path.exists(self.history_path):
                os.remove(self.history_path)
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.folder, state["weights"]))
        keras_compat.set_initial_epoch(self.model, state["epoch"])  # as keras.callbacks.BackupAndRestore does
        self.resumed_from = state["epoch"]
        for cb, key in ((self.es, "early_stopping"), (self.rlr, "reduce_lr")):
            for attr, value in state[key].items():
                setattr(cb, attr, value)
        best = os.path.join(self.folder, "es_best.npz")
        if os.path.isfile(best):
            with np.load(best) as z:
                self.es.best_weights = [z[f"w{i}"] for i in range(len(z.files))]
        hist = pd.read_csv(self.history_path)
        _atomic_csv(hist[hist["phase_epoch"] <= state["epoch"]], self.history_path)

    def on_train_end(self, logs=None):
        keras_compat.set_initial_epoch(self.model, None)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        row = {
            "phase_epoch": done,
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            **{k: float(v) for k, v in (logs or {}).items()},
        }
        old = pd.read_csv(self.history_path) if os.path.exists(self.history_path) else None
        _atomic_csv(
            pd.concat([old, pd.DataFrame([row])], ignore_index=True) if old is not None else pd.DataFrame([row]),
            self.history_path,
        )  # whole file each epoch: never a torn line
        weights = f"epoch{done}.weights.h5"
        self.model.save_weights(os.path.join(self.folder, weights))
        if self.es.best_weights is not None and self.es.wait == 0:  # improved this epoch
            tmp = os.path.join(self.folder, "es_best.tmp.npz")
            np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.es.best_weights)})
            os.replace(tmp, os.path.join(self.folder, "es_best.npz"))
        state = {
            "epoch": done,
            "weights": weights,
            "early_stopping": {a: _plain(getattr(self.es, a)) for a in ("wait", "best", "best_epoch", "stopped_epoch")},
            "reduce_lr": {a: _plain(getattr(self.rlr, a)) for a in ("wait", "best", "cooldown_counter")},
        }
        atomic_write_text(self.state_path, json.dumps(state))
        for f in os.listdir(self.folder):
            if f.startswith("epoch") and f.endswith(".weights.h5") and f != weights:
                os.remove(os.path.join(self.folder, f))
        if self.progress:
            per_epoch = (time.time() - self._t0) / max(1, done - self.resumed_from)
            val_acc = next(
                (
                    float(v)
                    for k, v in (logs or {}).items()
                    if k.startswith("val_") and k.endswith("accuracy") and "exit" not in k
                ),
                None,
            )
            atomic_write_text(
                self.progress,
                json.dumps(
                    {
                        "phase": self.phase,
                        "epoch": done,
                        "epochs": self.epochs,
                        "val_accuracy": val_acc,
                        "epoch_s": per_epoch,
                        "eta_phase_s": per_epoch * (self.epochs - done),
                        "time": time.time(),
                    }
                ),
            )


def _plain(v):
    return float(v) if isinstance(v, (float, np.floating)) else int(v) if isinstance(v, (int, np.integer)) else v


def _atomic_csv(df: pd.DataFrame, path: str) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def _history_frame(model: keras.Model, history: dict, phase: int, start_epoch: int) -> pd.DataFrame:
    df = pd.DataFrame(history)
    shorts = short_output_names(model)
    if len(model.outputs) == 1:  # Keras drops the output name for single-output models
        for split in ("", "val_"):
            df[f"{split}final_accuracy"] = df.pop(f"{split}accuracy")
            df[f"{split}final_loss"] = df[f"{split}loss"]
    else:
        df = df.rename(
            columns={
                f"{split}{long}_{metric}": f"{split}{short}_{metric}"
                for long, short in zip(output_names(model), shorts)
                for split in ("", "val_")
                for metric in ("loss", "accuracy")
            }
        )
    per_output = [
        f"{split}{short}_{metric}" for split in ("", "val_") for short in shorts for metric in ("loss", "accuracy")
    ]
    first = [c for c in ("learning_rate", "loss", "val_loss") if c in df.columns]
    df = df[
        first
        + [c for c in per_output if c in df.columns]
        + sorted(c for c in df.columns if c not in first and c not in per_output)
    ]
    df.insert(0, "phase_epoch", np.arange(1, len(df) + 1))
    df.insert(0, "phase", phase)
    df.insert(0, "epoch", np.arange(start_epoch + 1, start_epoch + len(df) + 1))
    return df


def fit_two_phase(
    model: keras.Model,
    train_ds,
    val_ds,
    cfg: RunConfig,
    strategy=None,
    verbose: int = 0,
    state_dir: str | None = None,
    test_ds=None,
    progress: str | None = None,
    test_labels=None,
) -> pd.DataFrame:
    """Phase 1 (heads only) then phase 2 (all layers). Returns the per-epoch history, one
    loss and accuracy column per output (``exit01_accuracy``, ``val_final_loss``, ...).
    After each phase the best-``val_loss`` weights are restored.

    train_ds: a dataset Keras iterates every epoch, or (what experiments pass) a callable
    ``(phase, first_epoch, epochs) -> (stream, steps_per_epoch)`` giving that phase's epochs as one
    stream (``pipeline.make_input`` with a ``pipeline.EpochPlan``): its order is then a function of the
    seed, phase and epoch alone, on every backend and across a resume.
    state_dir: checkpoint every epoch there and resume from it (a finished phase is kept as
    ``phaseN.weights.h5`` + ``phaseN_history.csv`` and not redone). test_ds: the paper
    protocol's per-epoch test evaluation of every output in phase 2 (``test_*`` columns), with
    ``test_labels`` its labels in order (else read from test_ds).
    progress: path of the progress file ``./run_all.sh`` shows."""
    import contextlib

    def scope():  # a fresh context per phase: a strategy's scope cannot be entered twice
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    frames = []
    phases = [
        (1, cfg.phase1_epochs, cfg.learning_rate, cfg.momentum, False),
        (2, cfg.phase2_epochs, cfg.phase2_learning_rate, cfg.phase2_momentum, True),
    ]
    for phase, epochs, lr, momentum, backbone_trainable in phases:
        if epochs <= 0:
            continue
        start = len(pd.concat(frames)) if frames else 0
        done_weights = os.path.join(state_dir, f"phase{phase}.weights.h5") if state_dir else None
        done_history = os.path.join(state_dir, f"phase{phase}_history.csv") if state_dir else None
        if done_weights and os.path.isfile(done_history):  # finished before an interruption: not redone
            model.load_weights(done_weights)  # the next phase compiles a fresh optimizer
            frames.append(pd.read_csv(done_history))
            continue
        with scope():
            set_trainable(model, backbone_trainable, cfg.frozen_bn)
            compile_model(model, lr, cfg, momentum=momentum)
            frame = _fit_phase(
                model,
                train_ds,
                val_ds,
                cfg,
                phase,
                epochs,
                lr,
                start,
                verbose,
                state_dir,
                test_ds,
                progress,
                test_labels,
            )
        frames.append(frame)
        if state_dir:  # the phase is finished: its weights (best val_loss) and history, then drop the epochs
            tmp = os.path.join(state_dir, f".phase{phase}.tmp.weights.h5")
            model.save_weights(tmp)
            os.replace(tmp, done_weights)
            _atomic_csv(frame, done_history)
            remove_tree(os.path.join(state_dir, f"phase{phase}"))
    set_trainable(model, True)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fit_phase(
    model, train_ds, val_ds, cfg, phase, epochs, lr, start, verbose, state_dir, test_ds, progress, test_labels=None
) -> pd.DataFrame:
    """One phase's ``fit`` with its callbacks; its history (resumed epochs included)."""
    weights = sum(loss_weights(len(model.outputs), cfg.loss_weights))
    guard = DivergenceGuard(
        weights * np.log(model.outputs[-1].shape[-1]), ceiling=weights * -np.log(keras.config.epsilon())
    )
    rlr, es = _callbacks(cfg)
    callbacks = [rlr, es, guard]
    if test_ds is not None and phase == 2:
        callbacks.append(TestEveryEpoch(test_ds, short_output_names(model), test_labels))
    resume = None
    if state_dir:
        resume = ResumeState(os.path.join(state_dir, f"phase{phase}"), phase, epochs, es, rlr, progress)
        callbacks.append(resume)
    steps = None
    if callable(train_ds):  # a stream of this phase's remaining epochs, from where a resume starts
        first = (resume.read_state() or {}).get("epoch", 0) if resume is not None else 0
        train_ds, steps = train_ds(phase, first, epochs - first)
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
        steps_per_epoch=steps,
    )
    logs = hist.history
    if resume is not None:  # the whole phase, epochs before an interruption included
        logs = pd.read_csv(resume.history_path).drop(columns="phase_epoch").to_dict("list")
    if guard.reason:
        raise TrainingDiverged(
            f"phase {phase}: training diverged ({guard.reason}) in epoch "
            f"{len(logs.get('loss', [])) + 1} at learning rate {lr}; lower the "
            "learning rate or check the inputs"
        )
    return _history_frame(model, logs, phase, start)
