"""Per-output metrics against numpy / scikit-learn computed independently here."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from elastic_lib.analysis.metrics import exits_table, final_confusion, output_metrics, per_class_table, worst_classes

N, C = 300, 10
NAMES = ["exit01", "exit02", "final"]
CLASSES = [f"c{i}" for i in range(C)]


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(1234)
    y = rng.integers(0, C, N)
    probs = []
    for signal in (0.3, 1.0, 2.0):  # increasingly accurate outputs
        logits = rng.normal(size=(N, C))
        logits[np.arange(N), y] += signal
        p = np.exp(logits - logits.max(1, keepdims=True))
        probs.append(p / p.sum(1, keepdims=True))
    return probs, y


def _top_k_hits(p, y, k):
    order = np.argsort(-p, axis=1)[:, :k]
    return np.array([y[i] in order[i] for i in range(len(y))])


def test_output_metrics_against_numpy_and_sklearn(arrays):
    probs, y = arrays
    for p in probs:
        m = output_metrics(p, y, C)
        pred = p.argmax(1)
        top1_err = int((pred != y).sum())
        top5_err = int((~_top_k_hits(p, y, 5)).sum())
        assert m["n"] == N
        assert m["top1_errors"] == top1_err and m["top1_err_pct"] == pytest.approx(100 * top1_err / N)
        assert m["top5_errors"] == top5_err and m["top5_err_pct"] == pytest.approx(100 * top5_err / N)
        assert m["top5_k"] == 5
        assert m["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(N), y])), rel=1e-9)
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), rel=1e-12)
        assert 0 < top5_err < top1_err  # the fixture is not degenerate


def test_few_classes_use_top_k_below_num_classes():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 50)
    p = rng.dirichlet(np.ones(4), 50)
    m = output_metrics(p, y, 4)
    assert m["top5_k"] == 3
    assert m["top5_errors"] == int((~_top_k_hits(p, y, 3)).sum())


def test_output_metrics_renormalises_float32_rounding(arrays):
    probs, y = arrays
    p32 = probs[1].astype(np.float32) * np.float32(1.0000003)
    assert output_metrics(p32.astype(np.float64), y, C)["loss"] == pytest.approx(
        output_metrics(probs[1], y, C)["loss"], rel=1e-5
    )


def test_exits_table(arrays):
    probs, y = arrays
    t = exits_table(probs, y, C, NAMES)
    assert list(t["output"]) == NAMES
    for i, p in enumerate(probs):
        correct = int((p.argmax(1) == y).sum())
        assert t.loc[i, "top1_correct"] == correct
        assert t.loc[i, "top1_errors"] == N - correct
    text = [c for c in t.columns if not pd.api.types.is_numeric_dtype(t[c])]
    assert text == ["output"], f"only the output name may be text, not {text}"


def test_per_class_table(arrays):
    probs, y = arrays
    t = per_class_table(probs, y, CLASSES, NAMES)
    assert len(t) == len(NAMES) * C
    for name, p in zip(NAMES, probs):
        sub = t[t["output"] == name].set_index("class_index")
        hits5 = _top_k_hits(p, y, 5)
        for c in range(C):
            mask = y == c
            assert sub.loc[c, "class_name"] == CLASSES[c]
            assert sub.loc[c, "n"] == mask.sum()
            assert sub.loc[c, "top1_acc"] == pytest.approx(np.mean(p[mask].argmax(1) == c))
            assert sub.loc[c, "top5_acc"] == pytest.approx(np.mean(hits5[mask]))


def test_worst_classes(arrays):
    probs, y = arrays
    t = per_class_table(probs, y, CLASSES, NAMES)
    acc = np.array([np.mean(probs[-1][y == c].argmax(1) == c) for c in range(C)])
    order = np.lexsort((np.arange(C), acc))  # by accuracy, ties by class index
    w = worst_classes(t, "final", n=4)
    assert list(w["class_index"]) == list(order[:4])
    assert (w["output"] == "final").all()
    w5 = worst_classes(t, "exit01", n=3, by="top5_acc")
    acc5 = np.array([np.mean(_top_k_hits(probs[0], y, 5)[y == c]) for c in range(C)])
    assert list(w5["class_index"]) == list(np.lexsort((np.arange(C), acc5))[:3])


def test_final_confusion(arrays):
    probs, y = arrays
    cm = final_confusion(probs, y, CLASSES)
    expected = np.bincount(y * C + probs[-1].argmax(1), minlength=C * C).reshape(C, C)
    np.testing.assert_array_equal(cm.to_numpy(), expected)
    assert list(cm.index) == CLASSES and list(cm.columns) == CLASSES
    assert cm.index.name == "true" and cm.columns.name == "predicted"


def test_top1_is_consistent_with_argmax_on_ties():
    # an untrained or collapsed exit often outputs exactly uniform probabilities
    p = np.full((4, C), 1.0 / C)
    y = np.array([0, 0, 0, 9])
    m = output_metrics(p, y, C)
    cm = final_confusion([p], y, CLASSES).to_numpy()
    wrong_by_argmax = int((p.argmax(1) != y).sum())  # argmax: class 0 for every sample -> 1 wrong
    assert wrong_by_argmax == len(y) - np.trace(cm) == 1
    assert m["top1_errors"] == wrong_by_argmax
