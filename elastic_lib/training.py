"""The paper's two-phase recipe: heads only (backbone frozen), then everything.

Loss = weighted sum of the per-output cross-entropies. SGD with momentum, ReduceLROnPlateau and
EarlyStopping on ``val_loss`` in each phase, the best-``val_loss`` weights restored at the end of
each phase (``EarlyStopping(restore_best_weights=True)``); model selection only ever looks at the
validation split. Every option is a ``RunConfig`` field (one place for parameters and defaults).
"""
from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from .config import LOSS_WEIGHT_SCHEMES, RunConfig
from .exits import is_head_layer, output_names, short_output_names


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


def set_trainable(model: keras.Model, backbone: bool) -> None:
    for layer in model.layers:
        layer.trainable = backbone or is_head_layer(layer)


def compile_model(model: keras.Model, lr: float, cfg: RunConfig, metrics: str = "all") -> None:
    """SGD(lr, cfg.momentum), one sparse cross-entropy per output weighted by
    ``cfg.loss_weights``; accuracy on every output (``metrics="all"``) or on the final one."""
    n = len(model.outputs)
    acc = [["accuracy"] for _ in range(n)] if metrics == "all" else [[] for _ in range(n - 1)] + [["accuracy"]]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum),
        loss=[keras.losses.SparseCategoricalCrossentropy() for _ in range(n)],
        loss_weights=loss_weights(n, cfg.loss_weights),
        metrics=acc,
        jit_compile=cfg.jit_compile,
    )


class DivergenceGuard(keras.callbacks.Callback):
    """The one divergence check: stops training when the batch loss is NaN/inf or explodes,
    above ``factor`` x the loss of an untrained network at chance (sum over outputs of
    weight x ln(num_classes)); ``fit_two_phase`` then raises ``TrainingDiverged``."""

    def __init__(self, chance_loss: float, factor: float = 1e4):
        super().__init__()
        self.limit = factor * max(chance_loss, 1.0)
        self.reason = ""

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss) or loss > self.limit:
            self.reason = f"loss {loss:.4g} at batch {batch} (limit {self.limit:.4g})"
            self.model.stop_training = True


def _callbacks(cfg: RunConfig):
    return [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=cfg.reduce_lr_factor,
                                          patience=cfg.reduce_lr_patience, min_lr=cfg.min_lr, verbose=0),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                      restore_best_weights=True),
    ]


def _history_frame(model: keras.Model, history: dict, phase: int, start_epoch: int) -> pd.DataFrame:
    df = pd.DataFrame(history)
    shorts = short_output_names(model)
    if len(model.outputs) == 1:  # Keras drops the output name for single-output models
        for split in ("", "val_"):
            df[f"{split}final_accuracy"] = df.pop(f"{split}accuracy")
            df[f"{split}final_loss"] = df[f"{split}loss"]
    else:
        df = df.rename(columns={f"{split}{long}_{metric}": f"{split}{short}_{metric}"
                                for long, short in zip(output_names(model), shorts)
                                for split in ("", "val_") for metric in ("loss", "accuracy")})
    per_output = [f"{split}{short}_{metric}" for split in ("", "val_") for short in shorts
                  for metric in ("loss", "accuracy")]
    first = [c for c in ("learning_rate", "loss", "val_loss") if c in df.columns]
    df = df[first + [c for c in per_output if c in df.columns]
            + sorted(c for c in df.columns if c not in first and c not in per_output)]
    df.insert(0, "phase_epoch", np.arange(1, len(df) + 1))
    df.insert(0, "phase", phase)
    df.insert(0, "epoch", np.arange(start_epoch + 1, start_epoch + len(df) + 1))
    return df


def fit_two_phase(model: keras.Model, train_ds, val_ds, cfg: RunConfig, strategy=None,
                  verbose: int = 0) -> pd.DataFrame:
    """Phase 1 (heads only) then phase 2 (all layers). Returns the per-epoch history, one
    loss and accuracy column per output (``exit01_accuracy``, ``val_final_loss``, ...).
    After each phase the best-``val_loss`` weights are restored."""
    import contextlib

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    frames = []
    phases = [(1, cfg.phase1_epochs, cfg.learning_rate, False), (2, cfg.phase2_epochs, cfg.phase2_learning_rate, True)]
    for phase, epochs, lr, backbone_trainable in phases:
        if epochs <= 0:
            continue
        weights = loss_weights(len(model.outputs), cfg.loss_weights)
        guard = DivergenceGuard(sum(weights) * np.log(model.outputs[-1].shape[-1]))
        with scope:
            set_trainable(model, backbone_trainable)
            compile_model(model, lr, cfg)
            hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=_callbacks(cfg) + [guard],
                             verbose=verbose, shuffle=False)
        start = len(pd.concat(frames)) if frames else 0
        frames.append(_history_frame(model, hist.history, phase, start))
        if guard.reason:
            raise TrainingDiverged(f"phase {phase}: training diverged ({guard.reason}) in epoch "
                                   f"{len(hist.history.get('loss', [])) + 1} at learning rate {lr}; lower the "
                                   "learning rate or check the inputs")
    set_trainable(model, True)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
