"""Per-exit evaluation on a held-out split, with scikit-learn metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, log_loss, recall_score

from elastic_lib.models.exits import predict_outputs, short_output_names


def _topk_hits(probs: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (topk == y[:, None]).any(axis=1)


def top5_k(num_classes: int) -> int:
    """k of "top-5": 5, or num_classes - 1 when there are 5 classes or fewer (top-k would be trivial)."""
    return 5 if num_classes > 5 else num_classes - 1


def output_metrics(probs: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    """Top-1/top-5 error (% and counts), cross-entropy loss and macro-F1 of one output."""
    labels = np.arange(num_classes)
    k = top5_k(num_classes)
    n = len(y)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rounding
    # ties broken towards the lowest class index, like argmax everywhere else (sklearn's
    # top_k_accuracy_score breaks them the other way, which matters for collapsed exits)
    top1_acc = float(_topk_hits(probs, y, 1).mean())
    top5_acc = float(_topk_hits(probs, y, k).mean())
    return {
        "n": n,
        "top1_errors": int(round((1 - top1_acc) * n)),
        "top1_err_pct": 100 * (1 - top1_acc),
        "top5_errors": int(round((1 - top5_acc) * n)),
        "top5_err_pct": 100 * (1 - top5_acc),
        "top5_k": k,
        "loss": log_loss(y, np.clip(probs, 1e-12, 1.0), labels=labels),
        "macro_f1": f1_score(y, probs.argmax(1), labels=labels, average="macro", zero_division=0),
    }


def exits_table(probs: list[np.ndarray], y: np.ndarray, num_classes: int, names: list[str]) -> pd.DataFrame:
    """One row per output, e.g. ``exit01 .. final``; every column numeric (``top1_correct`` of
    ``n`` counts the correct predictions, what the Inception-v4 report prints as ``#top-1``)."""
    rows = []
    for name, p in zip(names, probs):
        m = output_metrics(p, y, num_classes)
        m["top1_correct"] = m["n"] - m["top1_errors"]
        rows.append({"output": name, **m})
    return pd.DataFrame(rows)


def per_class_table(probs: list[np.ndarray], y: np.ndarray, class_names: list[str], names: list[str]) -> pd.DataFrame:
    """Per-class top-1 accuracy (recall) and top-5 accuracy of every output (long format)."""
    labels = np.arange(len(class_names))
    k = top5_k(len(class_names))
    rows = []
    for name, p in zip(names, probs):
        top1 = recall_score(y, p.argmax(1), labels=labels, average=None, zero_division=0)
        hits5 = _topk_hits(p, y, k)
        for c in labels:
            mask = y == c
            rows.append(
                {
                    "output": name,
                    "class_index": int(c),
                    "class_name": class_names[c],
                    "n": int(mask.sum()),
                    "top1_acc": float(top1[c]) if mask.any() else float("nan"),
                    "top5_acc": float(hits5[mask].mean()) if mask.any() else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def worst_classes(per_class: pd.DataFrame, output: str = "final", n: int = 10, by: str = "top1_acc") -> pd.DataFrame:
    """The ``n`` worst classes of one output by ``top1_acc`` or ``top5_acc`` (ties by class index)."""
    df = per_class[(per_class["output"] == output) & (per_class["n"] > 0)]
    return df.sort_values([by, "class_index"]).head(n).reset_index(drop=True)


def final_confusion(probs: list[np.ndarray], y: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    cm = confusion_matrix(y, probs[-1].argmax(1), labels=np.arange(len(class_names)))
    return pd.DataFrame(cm, index=pd.Index(class_names, name="true"), columns=pd.Index(class_names, name="predicted"))


def evaluate(model, dataset, class_names: list[str], labels=None):
    """Predict once, then (exits table, per-class table, final confusion matrix, probs, labels).
    ``labels``: the split's labels in dataset order (read from the dataset when not given)."""
    probs, y = predict_outputs(model, dataset, labels)
    names = short_output_names(model)
    return (
        exits_table(probs, y, len(class_names), names),
        per_class_table(probs, y, class_names, names),
        final_confusion(probs, y, class_names),
        probs,
        y,
    )
