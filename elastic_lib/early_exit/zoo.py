"""A zoo of early-exit policies over stored per-output probabilities: fitted on validation, judged
on test, no model needed (so they run on every backend, and on any multi-exit model's logits).

Every policy decides, per image, at which output to stop and what to predict there
(``Decision``); ``outcome`` turns that into accuracy and average cost. Each family has a
parameter grid; ``fit`` picks the member that is best on validation for a target:

- ``budget``: the highest validation accuracy whose average validation cost is within the budget
  (MSDNet's budgeted batch classification: Huang et al., ICLR 2018);
- ``max_drop``: the lowest validation cost whose validation accuracy is within ``max_drop`` of the
  final output's.

Families (``FAMILIES``):

- ``max_prob`` / ``entropy``: one global threshold on every early output's confidence (the
  workbook's dynamic policy; BranchyNet's entropy criterion: Teerapittayanon et al., ICPR 2016);
- ``per_exit``: one threshold per exit. Candidates are MSDNet's geometric exit distributions
  (a share m of the images leaves early, spread over the exits in proportion to r^k; on
  validation each exit's threshold is set so that its share leaves there) and every single exit;
  RANet, IMTA and L2W fit per-exit thresholds the same way;
- ``patience``: stop once the prediction has stayed the same for ``patience`` consecutive outputs
  (PABEE: Zhou et al., NeurIPS 2020);
- ``ensemble_geometric`` / ``ensemble_weighted``: the prediction at output k is the running
  geometric mean of outputs 1..k (anytime product of experts) or their mean weighted by depth
  (Zero-Time Waste's ensembles: Wołczyk et al., NeurIPS 2021); stop when its confidence passes a
  global threshold;
- ``risk_controlled``: a global max-probability threshold with a guarantee (``risk_controlled``):
  the accuracy drop against the final output is at most eps with probability at least 1 - delta
  over the draw of the validation set.

Costs are per-output cumulative costs (``kernel_macs_cumulative``: the staged forward up to and
including that output's head), or measured latencies (``with_cost``); the cost convention travels
with the outputs (``cost_unit``) into every table.

Stored format (``save_npz`` / ``load_npz``), for this workbook's runs and any other model's:
``{split}_probs`` (K outputs x N images x C classes; or ``{split}_logits``, softmaxed on load),
``{split}_labels`` (N) for ``split`` in ``val``, ``test``; ``cost`` (K, cumulative, any unit),
``cost_unit`` (a string), optional ``names`` (K strings) and ``{split}_top1`` (K x N top-1 classes,
exact where the probabilities were rounded for storage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from elastic_lib.control.config import CRITERIA

FAMILIES = (
    "max_prob",
    "entropy",
    "per_exit",
    "patience",
    "ensemble_geometric",
    "ensemble_weighted",
)


# ---------------------------------------------------------------- stored outputs
@dataclass(frozen=True)
class ExitOutputs:
    """One split's probabilities of every output (K x N x C), its labels, and the cumulative cost
    of stopping at each output."""

    probs: np.ndarray
    labels: np.ndarray
    cost: np.ndarray
    names: tuple = ()
    cost_unit: str = "kernel MACs"
    top1: np.ndarray | None = None  # K x N top-1 classes when stored apart (exact where probs are rounded)

    def __post_init__(self):
        probs = np.asarray(self.probs, dtype=np.float32)
        if probs.ndim != 3:
            raise ValueError(f"probs must be outputs x images x classes, got shape {probs.shape}")
        k, n, _ = probs.shape
        labels = np.asarray(self.labels).astype(np.int64).reshape(-1)
        cost = np.asarray(self.cost, dtype=np.float64).reshape(-1)
        if len(labels) != n or len(cost) != k:
            raise ValueError(f"{k} outputs x {n} images need {n} labels and {k} costs: got {len(labels)}, {len(cost)}")
        if np.any(np.diff(cost) < 0):
            raise ValueError(f"cost must be cumulative (non-decreasing along the outputs): {cost}")
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "names", tuple(self.names) or tuple(f"output{i + 1:02d}" for i in range(k)))
        if self.top1 is not None:
            top1 = np.asarray(self.top1).astype(np.int64)
            if top1.shape != (k, n):
                raise ValueError(f"top1 must be outputs x images {(k, n)}, got {top1.shape}")
            object.__setattr__(self, "top1", top1)

    @property
    def num_outputs(self) -> int:
        return self.probs.shape[0]

    @property
    def num_images(self) -> int:
        return self.probs.shape[1]

    @property
    def preds(self) -> np.ndarray:
        """K x N top-1 predictions (``top1`` when stored, else the argmax of ``probs``)."""
        return self.top1 if self.top1 is not None else self.probs.argmax(axis=2)

    @property
    def correct(self) -> np.ndarray:
        """K x N: is output k right on image i."""
        return self.preds == self.labels[None, :]

    def take(self, idx) -> ExitOutputs:
        """The same outputs on the images ``idx``."""
        top1 = None if self.top1 is None else self.top1[:, idx]
        return replace(self, probs=self.probs[:, idx], labels=self.labels[idx], top1=top1)


def with_cost(outputs: ExitOutputs, cost, unit: str) -> ExitOutputs:
    """The same outputs with another cost per output (e.g. measured cumulative latency in ms)."""
    return replace(outputs, cost=np.asarray(cost, dtype=np.float64), cost_unit=unit)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def save_npz(path: str, val: ExitOutputs, test: ExitOutputs, dtype=np.float16) -> None:
    """Both splits in the stored format, compressed: probabilities as ``dtype`` and every output's
    top-1 class apart (``{split}_top1``, from the probabilities as given), so that rounding to
    float16 (about 3 significant digits) never changes a prediction, only confidences."""
    np.savez_compressed(
        path,
        val_probs=val.probs.astype(dtype),
        val_labels=val.labels.astype(np.int32),
        val_top1=val.preds.astype(np.int16),
        test_probs=test.probs.astype(dtype),
        test_labels=test.labels.astype(np.int32),
        test_top1=test.preds.astype(np.int16),
        cost=val.cost,
        cost_unit=np.array(val.cost_unit),
        names=np.array(val.names),
    )


def load_npz(path: str) -> tuple[ExitOutputs, ExitOutputs]:
    """(val, test) from the stored format (``{split}_logits`` are softmaxed); a clear error on a
    file that does not follow it."""
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        missing = [k for k in ("val_labels", "test_labels", "cost") if k not in keys]
        missing += [f"{s}_probs or {s}_logits" for s in ("val", "test") if not {f"{s}_probs", f"{s}_logits"} & keys]
        if missing:
            raise ValueError(
                f"{path}: not the stored early-exit layout, missing {missing} (see elastic_lib.early_exit.zoo)"
            )
        unit = str(f["cost_unit"]) if "cost_unit" in keys else "cost"
        names = tuple(str(n) for n in f["names"]) if "names" in keys else ()
        out = []
        for s in ("val", "test"):
            if f"{s}_probs" in keys:
                probs = f[f"{s}_probs"].astype(np.float32)
            else:
                probs = softmax(f[f"{s}_logits"].astype(np.float32))
            top1 = f[f"{s}_top1"] if f"{s}_top1" in keys else None
            out.append(ExitOutputs(probs, f[f"{s}_labels"], f["cost"], names, unit, top1))
    return out[0], out[1]


# ---------------------------------------------------------------- decisions
@dataclass
class Decision:
    """Where each image stopped (output index) and what was predicted there."""

    exits: np.ndarray
    preds: np.ndarray


def outcome(decision: Decision, outputs: ExitOutputs) -> dict:
    """Accuracy, average cost (and as a fraction of the final output's cost), mean exit (1-based)."""
    cost = outputs.cost[decision.exits]
    return {
        "accuracy": float((decision.preds == outputs.labels).mean()),
        "mean_cost": float(cost.mean()),
        "cost_fraction": float(cost.mean() / outputs.cost[-1]),
        "mean_exit": float(decision.exits.mean() + 1),
    }


def _first_passing(stop: np.ndarray) -> np.ndarray:
    """Per image, the first output (row) whose ``stop`` is true; the final row always stops."""
    stop = stop.copy()
    stop[-1] = True
    return stop.argmax(axis=0)


def confidence(probs: np.ndarray, criterion: str) -> np.ndarray:
    """Higher = more confident. max_prob: max softmax; entropy: minus the entropy (nats)."""
    if criterion == "max_prob":
        return probs.max(axis=-1)
    if criterion == "entropy":
        p = np.clip(probs, 1e-12, 1.0)
        return (p * np.log(p)).sum(axis=-1)
    _check_criterion(criterion)


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown exit criterion {criterion!r}; valid: {CRITERIA}")


def _ensembles(probs: np.ndarray, kind: str) -> np.ndarray:
    """K x N x C running ensembles of outputs 1..k."""
    if kind == "geometric":
        logs = np.cumsum(np.log(np.clip(probs, 1e-12, 1.0)), axis=0) / np.arange(1, len(probs) + 1)[:, None, None]
        return softmax(logs)
    w = np.arange(1, len(probs) + 1, dtype=np.float32)[:, None, None]
    return np.cumsum(probs * w, axis=0) / np.cumsum(w, axis=0)


@dataclass
class Policy:
    """One member of a family: ``family`` and its parameters; ``decide`` applies it."""

    family: str
    params: dict = field(default_factory=dict)

    def decide(self, outputs: ExitOutputs) -> Decision:
        preds = outputs.preds
        cols = np.arange(outputs.num_images)
        f, p = self.family, self.params
        if f in ("max_prob", "entropy", "risk_controlled"):
            crit = "entropy" if f == "entropy" else "max_prob"
            exits = _first_passing(confidence(outputs.probs, crit) >= p["threshold"])
        elif f == "per_exit":
            t = np.asarray(p["thresholds"], dtype=np.float64)[:, None]
            exits = _first_passing(confidence(outputs.probs, "max_prob") >= t)
        elif f == "patience":
            k = p["patience"]
            same = np.ones_like(preds, dtype=np.int64)
            for i in range(1, len(preds)):
                same[i] = np.where(preds[i] == preds[i - 1], same[i - 1] + 1, 1)
            exits = _first_passing(same > k)
        elif f.startswith("ensemble_"):
            ens = _ensembles(outputs.probs, f.removeprefix("ensemble_"))
            exits = _first_passing(ens.max(axis=-1) >= p["threshold"])
            return Decision(exits, ens.argmax(axis=-1)[exits, cols])
        else:
            raise ValueError(f"unknown policy family {f!r}; valid: {FAMILIES + ('risk_controlled',)}")
        return Decision(exits, preds[exits, cols])

    def describe(self) -> str:
        def short(v):
            if isinstance(v, (list, tuple, np.ndarray)):
                return "[" + " ".join("-" if not np.isfinite(x) else f"{x:.3g}" for x in v) + "]"
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        return ", ".join(f"{k}={short(v)}" for k, v in self.params.items() if not k.startswith("_"))


# ---------------------------------------------------------------- candidates per family
CONFIDENCE_GRID = np.unique(np.round(np.concatenate([np.linspace(0.0, 1.0, 101), [0.995, 0.999, 0.9999, 1.01]]), 6))
GEOMETRIC_RATIOS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0)
EARLY_SHARES = np.round(np.linspace(0.05, 1.0, 20), 4)


def per_exit_thresholds(val: ExitOutputs, shares: np.ndarray) -> np.ndarray:
    """Thresholds on each early output's max probability such that, on ``val``, about ``shares[k]``
    of all images leave at output k (the surest of those still undecided); the final takes the rest."""
    conf = confidence(val.probs, "max_prob")
    n = val.num_images
    left = np.ones(n, dtype=bool)
    out = np.full(val.num_outputs, -np.inf)
    for k in range(val.num_outputs - 1):
        m = int(round(shares[k] * n))
        if m <= 0 or not left.any():
            out[k] = np.inf
            continue
        c = np.sort(conf[k][left])[::-1]
        t = c[min(m, len(c)) - 1]
        out[k] = t
        left &= ~(conf[k] >= t)
    return out


def candidates(family: str, val: ExitOutputs) -> list[Policy]:
    """The grid a family is fitted over (``per_exit``: built on ``val``)."""
    k = val.num_outputs
    if family == "max_prob" or family.startswith("ensemble_"):
        return [Policy(family, {"threshold": float(t)}) for t in CONFIDENCE_GRID]
    if family == "entropy":
        grid = np.linspace(0.0, math.log(val.probs.shape[2]), 101)
        return [Policy(family, {"threshold": float(-h)}) for h in grid]  # confidence = -entropy
    if family == "patience":
        return [Policy(family, {"patience": p}) for p in range(1, k)]
    if family == "per_exit":
        out = []
        for i in range(k):  # every single output: all images stop at output i
            t = np.full(k, np.inf)
            t[i:] = -np.inf
            out.append(Policy(family, {"thresholds": t, "_single": i}))
        for t in CONFIDENCE_GRID:  # one threshold for all: the global policy is a member
            out.append(Policy(family, {"thresholds": np.r_[np.full(k - 1, t), -np.inf]}))
        for r in GEOMETRIC_RATIOS:
            w = r ** np.arange(k - 1, dtype=np.float64)
            for m in EARLY_SHARES:
                shares = m * w / w.sum()
                out.append(Policy(family, {"thresholds": per_exit_thresholds(val, shares), "r": r, "early_share": m}))
        return out
    raise ValueError(f"unknown policy family {family!r}; valid: {FAMILIES}")


def sweep(policies: list[Policy], outputs: ExitOutputs) -> pd.DataFrame:
    """Outcome of every policy on ``outputs`` (a row each, ``policy`` the index into ``policies``)."""
    return pd.DataFrame([{"policy": i, **outcome(p.decide(outputs), outputs)} for i, p in enumerate(policies)])


def choose(table: pd.DataFrame, final_accuracy: float, budget=None, max_drop=None) -> int | None:
    """Index of the chosen row of a validation ``sweep`` for a target (``budget`` as a fraction of
    the final output's cost, or ``max_drop`` in accuracy); None when no row meets it."""
    if (budget is None) == (max_drop is None):
        raise ValueError("give exactly one target: budget= (a fraction of the final output's cost) or max_drop=")
    if budget is not None:
        ok = table[table["cost_fraction"] <= budget + 1e-12]
        order = ok.sort_values(["accuracy", "cost_fraction"], ascending=[False, True])
    else:
        ok = table[table["accuracy"] >= final_accuracy - max_drop - 1e-12]
        order = ok.sort_values(["cost_fraction", "accuracy"], ascending=[True, False])
    return None if order.empty else int(order["policy"].iloc[0])


def fit(family: str, val: ExitOutputs, budget=None, max_drop=None) -> Policy | None:
    """The member of ``family`` that is best on ``val`` for the target (see ``choose``); for
    ``per_exit`` the best candidate is then refined one exit's threshold at a time (``refine``)."""
    pool = candidates(family, val)
    final = float(val.correct[-1].mean())
    idx = choose(sweep(pool, val), final, budget=budget, max_drop=max_drop)
    if idx is None:
        return None
    return refine(pool[idx], val, final, budget, max_drop) if family == "per_exit" else pool[idx]


def fit_budgets(family: str, val: ExitOutputs, budgets) -> dict:
    """budget -> ``fit(family, val, budget=budget)`` (the same members), the validation sweep of
    the family's candidates done once for all budgets instead of once per budget (what curves over
    many budgets need)."""
    pool = candidates(family, val)
    table = sweep(pool, val)
    final = float(val.correct[-1].mean())
    out = {}
    for budget in budgets:
        idx = choose(table, final, budget=budget)
        if idx is None:
            out[budget] = None
        elif family == "per_exit":
            out[budget] = refine(pool[idx], val, final, budget, None)
        else:
            out[budget] = pool[idx]
    return out


def refine(policy: Policy, val: ExitOutputs, final: float, budget=None, max_drop=None, passes: int = 2) -> Policy:
    """Coordinate ascent on per-exit thresholds: each early exit's threshold in turn takes the value
    of ``CONFIDENCE_GRID`` (or never) that is best on ``val`` for the target while the others stay;
    ``passes`` rounds. Never worse on validation than where it starts."""
    conf = confidence(val.probs, "max_prob")
    right = val.correct
    cols = np.arange(val.num_images)
    frac = val.cost / val.cost[-1]

    def score(t):
        exits = _first_passing(conf >= t[:, None])
        acc, cost = float(right[exits, cols].mean()), float(frac[exits].mean())
        if budget is not None:
            return (acc, -cost) if cost <= budget + 1e-12 else None
        return (-cost, acc) if acc >= final - max_drop - 1e-12 else None

    best = np.asarray(policy.params["thresholds"], dtype=np.float64).copy()
    best_score = score(best)
    for _ in range(passes):
        moved = False
        for k in range(val.num_outputs - 1):
            for value in (*CONFIDENCE_GRID, np.inf):
                trial = best.copy()
                trial[k] = value
                sc = score(trial)
                if sc is not None and (best_score is None or sc > best_score):
                    best, best_score, moved = trial, sc, True
        if not moved:
            break
    return Policy("per_exit", {**{k: v for k, v in policy.params.items() if k != "thresholds"}, "thresholds": best})


# ---------------------------------------------------------------- risk control
def risk_controlled(val: ExitOutputs, eps: float, delta: float, thresholds=None) -> Policy:
    """A global max-probability threshold whose accuracy drop against the final output is at most
    ``eps`` with probability at least ``1 - delta`` over the draw of ``val`` (i.i.d. with test).

    Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei: "Learn then Test: Calibrating
    Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052), as applied to early exit by
    Jazbec et al. ("Fast yet Safe: Early-Exiting with Risk Control", NeurIPS 2024). The loss of an
    image is 1 when the final output is right and the policy's output is wrong; its mean bounds the
    accuracy drop from above. For each threshold, the null "risk > eps" gets the exact binomial
    p-value P(Binomial(n, eps) <= losses); thresholds are tested in a fixed sequence from the most
    cautious (no early exit) on, and the last one rejected before the first that is not is chosen:
    the family-wise error is at most delta without any correction. When none is rejected, no image
    exits early (threshold above 1: zero risk)."""
    from scipy.stats import binom

    if not (0 < eps < 1 and 0 < delta < 1):
        raise ValueError(f"eps and delta must lie in (0, 1): got eps={eps}, delta={delta}")
    grid = np.sort(np.asarray(CONFIDENCE_GRID if thresholds is None else thresholds, dtype=np.float64))[::-1]
    final_right = val.correct[-1]
    n = val.num_images
    chosen, tested = float("inf"), []
    for t in grid:
        d = Policy("risk_controlled", {"threshold": float(t)}).decide(val)
        losses = int((final_right & (d.preds != val.labels)).sum())
        p = float(binom.cdf(losses, n, eps))
        tested.append((float(t), losses / n, p))
        if p > delta:
            break
        chosen = float(t)
    return Policy("risk_controlled", {"threshold": chosen, "eps": eps, "delta": delta, "_tested": tested})


# ---------------------------------------------------------------- comparisons
def single_exits(outputs: ExitOutputs) -> pd.DataFrame:
    """Each output on its own: accuracy and cost fraction."""
    acc = outputs.correct.mean(axis=1)
    return pd.DataFrame(
        {"output": list(outputs.names), "accuracy": acc, "cost_fraction": outputs.cost / outputs.cost[-1]}
    )


def compare_at_budgets(val: ExitOutputs, test: ExitOutputs, budgets, families=FAMILIES, max_drops=()) -> pd.DataFrame:
    """Every family fitted on ``val`` at every target, judged on ``test`` (a row per family and
    target): validation and test accuracy and cost, the chosen parameters, and the best single
    output within the same budget on validation (what a policy has to beat)."""
    rows = []
    singles_val = single_exits(val)
    for target, values in (("budget", budgets), ("max_drop", max_drops)):
        for value in values:
            best_single = None
            if target == "budget":
                ok = singles_val[singles_val["cost_fraction"] <= value + 1e-12]
                best_single = None if ok.empty else int(ok.sort_values("accuracy", ascending=False).index[0])
            for family in families:
                policy = fit(family, val, **{target: value})
                row = {"target": target, "value": float(value), "family": family}
                if policy is None:
                    rows.append({**row, "status": "no member meets the target on validation"})
                    continue
                v, t = outcome(policy.decide(val), val), outcome(policy.decide(test), test)
                rows.append(
                    {
                        **row,
                        "status": "ok",
                        "params": policy.describe(),
                        "val_accuracy": v["accuracy"],
                        "val_cost_fraction": v["cost_fraction"],
                        "test_accuracy": t["accuracy"],
                        "test_cost_fraction": t["cost_fraction"],
                        "test_mean_exit": t["mean_exit"],
                        "best_single_output": None if best_single is None else val.names[best_single],
                        "best_single_test_accuracy": None
                        if best_single is None
                        else float(test.correct[best_single].mean()),
                    }
                )
    return pd.DataFrame(rows)
