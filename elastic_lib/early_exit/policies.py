"""Early-exit policies a deployer asks for, on stored probabilities (no model needed):

- **budgeted**: given an average cost budget (a fraction of the final output's kernel MACs), the
  threshold is chosen on the validation split as the one with the best validation accuracy whose
  average cost there stays within the budget; the test split then gives its accuracy and the
  cost it really spends. The cost of an image that exits at output i is the staged forward's up
  to i (``kernel_macs_cumulative``: the backbone prefix and every head up to i).
- **calibration**: expected calibration error (ECE, equal-width confidence bins) of every
  output, and per-output temperature scaling fitted on validation (minimum negative
  log-likelihood); ``calibrated`` rescales probabilities p -> p^(1/T) / sum, i.e. logits / T.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from elastic_lib.control.config import default
from elastic_lib.early_exit.staged import default_thresholds, dynamic_exit, policy_outcome


def cost_fractions(costs: pd.DataFrame, convention: str = "kernel_macs") -> np.ndarray:
    """Per output, the cost of stopping there as a fraction of the final output's cost alone."""
    return costs[f"{convention}_cumulative"].to_numpy(float) / float(costs[f"{convention}_to_output"].iloc[-1])


def policy_at(
    probs: list[np.ndarray],
    y: np.ndarray,
    threshold: float,
    fractions: np.ndarray,
    criterion: str = default("exit_criterion"),
) -> dict:
    chosen = dynamic_exit(probs, threshold, criterion)
    out = policy_outcome(probs, y, chosen)
    return {
        "threshold": float(threshold),
        "accuracy": out["accuracy"],
        "cost_fraction": float(fractions[chosen].mean()),
        "mean_exit": float(chosen.mean() + 1),
    }


def budgeted(
    val: tuple,
    test: tuple,
    costs: pd.DataFrame,
    budget: float,
    criterion: str = default("exit_criterion"),
    thresholds=None,
    convention: str = "kernel_macs",
) -> dict:
    """The budgeted policy: ``val`` and ``test`` are (probabilities per output, labels). Returns
    the chosen threshold, validation accuracy and cost, test accuracy and realised cost."""
    fractions = cost_fractions(costs, convention)
    if not budget >= fractions[0]:
        raise ValueError(
            f"budget {budget!r} is below the cheapest exit's cost ({fractions[0]:.4f} of the final "
            f"output's {convention}): no policy can meet it"
        )
    thresholds = default_thresholds(criterion, val[0][0].shape[1]) if thresholds is None else thresholds
    rows = pd.DataFrame([policy_at(*val, t, fractions, criterion) for t in thresholds])
    ok = rows[rows["cost_fraction"] <= budget + 1e-12]
    if ok.empty:
        raise ValueError(
            f"no threshold of the sweep keeps the average validation cost within {budget}: "
            "give thresholds that let every image exit early (e.g. 0 for max_prob)"
        )
    best = ok.sort_values(["accuracy", "cost_fraction"], ascending=[False, True]).iloc[0]
    on_test = policy_at(*test, best["threshold"], fractions, criterion)
    return {
        "budget": budget,
        "criterion": criterion,
        "threshold": float(best["threshold"]),
        "val_accuracy": float(best["accuracy"]),
        "val_cost_fraction": float(best["cost_fraction"]),
        "test_accuracy": on_test["accuracy"],
        "test_cost_fraction": on_test["cost_fraction"],
        "test_mean_exit": on_test["mean_exit"],
    }


def budget_table(
    val: tuple,
    test: tuple,
    costs: pd.DataFrame,
    budgets=(0.25, 0.5, 0.75, 1.0),
    criterion: str = default("exit_criterion"),
) -> pd.DataFrame:
    """``budgeted`` at several budgets (those below the cheapest exit's cost are left out)."""
    floor = cost_fractions(costs)[0]
    return pd.DataFrame([budgeted(val, test, costs, b, criterion) for b in budgets if b >= floor])


# ---------------------------------------------------------------- calibration
def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width bins of max probability of
    (share of images in the bin) x |accuracy - mean confidence| in the bin."""
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(hit[sel].mean() - conf[sel].mean())
    return float(total)


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of logits / T, from probabilities: p^(1/T) normalised (computed in log space)."""
    z = np.log(np.clip(probs, 1e-30, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels ``y``."""
    return -float(np.log(np.clip(probs[np.arange(len(y)), y], 1e-30, 1.0)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature (0.05 .. 20) that minimises the negative log-likelihood of ``y``."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: nll(calibrated(probs, float(np.exp(log_t))), y),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(res.x))


def calibration_table(val: tuple, test: tuple, names: list[str]) -> tuple[pd.DataFrame, list[float]]:
    """Per output: the temperature fitted on validation, test ECE before and after, test NLL
    before and after. Returns (table, temperatures)."""
    rows, temps = [], []
    for name, pv, pt in zip(names, val[0], test[0]):
        t = fit_temperature(pv, val[1])
        temps.append(t)
        after = calibrated(pt, t)
        rows.append(
            {
                "output": name,
                "temperature": t,
                "test_ece": ece(pt, test[1]),
                "test_ece_calibrated": ece(after, test[1]),
                "test_nll": nll(pt, test[1]),
                "test_nll_calibrated": nll(after, test[1]),
            }
        )
    return pd.DataFrame(rows), temps


def cost_curves(
    test: tuple, costs: pd.DataFrame, temperatures: list[float], criterion: str = default("exit_criterion")
) -> pd.DataFrame:
    """Test accuracy vs cost over the threshold sweep, with and without each output's
    temperature (fitted on validation) applied before thresholding: whether calibration moves
    the accuracy-vs-cost curve."""
    fractions = cost_fractions(costs)
    frames = []
    for label, temps in (("as trained", [1.0] * len(temperatures)), ("temperature-scaled", temperatures)):
        probs = [calibrated(p, t) if t != 1.0 else p for p, t in zip(test[0], temps)]
        for t in default_thresholds(criterion, probs[0].shape[1]):
            frames.append({"probabilities": label, **policy_at(probs, test[1], t, fractions, criterion)})
    return pd.DataFrame(frames)


def cost_curves_figure(curves: pd.DataFrame, budgets: pd.DataFrame | None = None, title: str = ""):
    """Test accuracy vs cost fraction, as trained and temperature-scaled (``cost_curves``), with the
    budgeted policy's points (``budget_table``) where given."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(6.5, 4.0))
        sns.lineplot(
            curves,
            x="cost_fraction",
            y="accuracy",
            hue="probabilities",
            style="probabilities",
            markers=True,
            dashes=False,
            sort=True,
            estimator=None,
            ax=ax,
        )
        if budgets is not None and not budgets.empty:
            ax.scatter(
                budgets["test_cost_fraction"],
                budgets["test_accuracy"],
                marker="*",
                s=120,
                color="k",
                zorder=5,
                label="budgeted policy (test)",
            )
            for _, r in budgets.iterrows():
                ax.axvline(r["budget"], color="0.7", lw=0.8, ls=":")
        ax.set(
            xlabel="average cost (fraction of the final output's kernel MACs)",
            ylabel="test top-1 accuracy",
            title=title,
        )
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
    return fig
