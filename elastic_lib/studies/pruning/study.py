"""The channel-pruning study (notebooks/channel_pruning.ipynb): a profile's trained VGG16 runs
(baseline and elastic) pruned with ``elastic_lib.studies.pruning.channels``; the study's single-layer table and
figure, its whole-model table (with and without fine-tuning) and, for the elastic VGG16, every
exit's error before and after pruning. The study's own figures (VGG16 on ImageNet-2012) are in
``results/reference/pruning_*.csv`` and stand beside ours, never mixed into them: ours are on
the CIFAR-10 subset at 32x32, their errors are not comparable, only the rules' ordering is.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from elastic_lib.control.config import ConfigError, PruningConfig, default
from elastic_lib.control.paths import ROOT
from elastic_lib.control.results import completed_runs, read_params, repo_relative, write_csv
from elastic_lib.studies.pruning import channels as pruning

REFERENCE = os.path.join(ROOT, "results", "reference")
RULE_LABELS = {
    "reconstruct": "ours (LASSO + least squares)",
    "first_k": "first k",
    "sparse_vector": "sparse vector (LASSO, no least squares)",
    "max_response": "max response (producer filter L1)",
}


@dataclasses.dataclass
class RunData:
    """A trained run: its model and preprocessed images (numpy) of every split."""

    name: str
    variant: str
    model: object
    cfg: object
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sample_images(self, n: int, seed: int = default("seed", PruningConfig)) -> np.ndarray:
        """``n`` training images (stratification aside: a seeded random draw) for the sampled points."""
        idx = np.random.default_rng(seed).permutation(len(self.x_train))[:n]
        return self.x_train[np.sort(idx)]


def _tqdm():
    """tqdm's notebook bar where ipywidgets is installed, else its text bar (``tqdm.auto`` would
    warn, with this machine's site-packages path, into the committed notebook)."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets"):
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def find_runs(profile: str, results_root: str | None = None) -> dict[str, str]:
    """The completed VGG16 runs of ``<results_root>/<profile>/`` by variant (``baseline``, ``elastic``)."""
    profile_dir = os.path.join(results_root or os.path.join(ROOT, "results"), profile)
    done = completed_runs(profile_dir) if os.path.isdir(profile_dir) else []
    runs = {}
    for run_dir in done:
        p = read_params(run_dir)
        if p.get("backbone") == "vgg16":
            runs.setdefault(p.get("variant"), run_dir)
    if "baseline" not in runs:
        raise ConfigError(
            f"{repo_relative(profile_dir)} has no completed vgg16 baseline run (completed: "
            f"{[os.path.basename(d) for d in done] or 'none'}): the study needs a profile that trains vgg16, "
            "e.g. ./run_all.sh --profile pruning --data-dir <folder with the CIFAR-10 archive>"
        )
    return runs


def _arrays(exp, split: str):
    xs, ys = [], []
    for xb, yb in exp.pipeline(split):
        xs.append(np.asarray(xb))
        ys.append(np.asarray(yb[0] if isinstance(yb, tuple) else yb))
    return np.concatenate(xs), np.concatenate(ys).astype(int)


def load_run(run_dir: str) -> RunData:
    """A finished run's trained model (``model.weights.h5``) and its data, preprocessed as it was trained."""
    from elastic_lib.experiment import Experiment

    if not os.path.isfile(os.path.join(run_dir, "model.weights.h5")):
        raise FileNotFoundError(
            f"{repo_relative(run_dir)} has no model.weights.h5 (weights are not committed): "
            "retrain it with ./run_all.sh --profile <profile> --force"
        )
    exp = Experiment.from_run_dir(run_dir)
    x_train, y_train = _arrays(exp, "train")
    x_test, y_test = _arrays(exp, "test")
    return RunData(os.path.basename(run_dir), exp.cfg.variant, exp.model, exp.cfg, x_train, y_train, x_test, y_test)


def load_runs(runs: dict[str, str]) -> list[RunData]:
    """The runs of ``find_runs``, loaded: the baseline first, then the elastic one if any."""
    return [load_run(runs[v]) for v in ("baseline", "elastic") if v in runs]


# ---------------------------------------------------------------- single layer
def single_layer(
    run: RunData,
    layers=pruning.SINGLE_LAYERS,
    ratios=pruning.RATIOS,
    rules=pruning.RULES,
    sample_images: int = default("sample_images", PruningConfig),
    points_per_image: int = default("points_per_image", PruningConfig),
    seed: int = default("seed", PruningConfig),
) -> pd.DataFrame:
    """The single-layer experiment on ``run``'s test images (see ``pruning.single_layer_table``)."""
    tqdm = _tqdm()

    bar = tqdm(total=len(layers) * len(ratios) * len(rules), desc="single layer", leave=False)
    table = pruning.single_layer_table(
        run.model,
        run.sample_images(sample_images, seed),
        run.x_test,
        run.y_test,
        layers,
        ratios,
        rules,
        points_per_image,
        seed,
        progress=lambda *_: bar.update(1),
    )
    bar.close()
    return table.assign(run=run.name)


def reference_single_layer() -> pd.DataFrame:
    return pd.read_csv(os.path.join(REFERENCE, "pruning_single_layer.csv"))


def single_layer_markdown(table: pd.DataFrame) -> str:
    """Per layer: rules x ratios, our increased top-1 error (pp) with the study's value in brackets."""
    ref = reference_single_layer().set_index(["study_layer", "rule", "ratio"])["err_inc_pct"]
    parts = []
    for layer, g in table.groupby("study_layer", sort=False):
        rows = []
        for rule, r in g.groupby("rule", sort=False):
            row = {"rule": RULE_LABELS[rule]}
            for _, x in r.iterrows():
                study = ref.get((layer, rule, float(x["ratio"])), np.nan)
                row[f"{x['ratio']:g}x"] = f"{x['top1_err_inc_pct']:.2f} [{study:g}]"
            rows.append(row)
        parts.append(
            f"**{layer}** ({g['layer'].iloc[0]}, {int(g['channels'].iloc[0])} input channels)\n\n"
            + pd.DataFrame(rows).to_markdown(index=False, tablefmt="github")
            + "\n"
        )
    return "\n".join(parts)


def rule_ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer, each rule's mean increased error over the ratios above 1 that ran and its rank
    (1 = the least damage), ours beside the study's over the same ratios: the comparison the
    study allows across datasets."""
    ours = (
        table[table["ratio"] > 1]
        .groupby(["study_layer", "rule"], sort=False)["top1_err_inc_pct"]
        .mean()
        .rename("ours_mean_inc_pct")
        .reset_index()
    )
    ref = reference_single_layer()
    ran = set(table["ratio"][table["ratio"] > 1])
    study = (
        ref[ref["ratio"].isin(ran)].groupby(["study_layer", "rule"])["err_inc_pct"].mean().rename("study_mean_inc_pct")
    )
    df = ours.merge(study.reset_index(), on=["study_layer", "rule"], how="left")
    df["ours_rank"] = df.groupby("study_layer")["ours_mean_inc_pct"].rank(method="min").astype(int)
    df["study_rank"] = df.groupby("study_layer")["study_mean_inc_pct"].rank(method="min").astype("Int64")
    return df


def ranking_sentence(ranking: pd.DataFrame) -> str:
    """One line per layer: both orderings, best first, and whether they agree."""
    lines = []

    def order(g, col):  # equal means (to 0.01 pp) are ties, written "="
        g = g.sort_values([col, "rule"])
        out = []
        for prev, (_, r) in zip([None, *g[col].round(2)], g.iterrows()):
            out.append(("" if prev is None else " = " if prev == round(r[col], 2) else " < ") + r["rule"])
        return "".join(out)

    for layer, g in ranking.groupby("study_layer", sort=False):
        ours, study = order(g, "ours_mean_inc_pct"), order(g, "study_mean_inc_pct")
        lines.append(f"- {layer}: ours {ours}; study {study}" + (" (same order)" if ours == study else ""))
    return "\n".join(lines)


def single_layer_figure(table: pd.DataFrame, ours: str = "ours"):
    """Increased error vs the layer's speed-up ratio, one panel per layer, four rules; the top row
    ours (``ours``: what the model was trained on; top-1, percentage points), the bottom row the
    study's (ImageNet)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from elastic_lib.analysis.plots import styled

    @styled
    def draw():
        ref = reference_single_layer()
        layers_ = list(dict.fromkeys(table["study_layer"]))
        fig, axes = plt.subplots(2, len(layers_), figsize=(4.2 * len(layers_), 6.6), squeeze=False, sharex=True)
        order = list(RULE_LABELS)
        for j, layer in enumerate(layers_):
            for i, (df, y, who) in enumerate(
                ((table, "top1_err_inc_pct", ours), (ref, "err_inc_pct", "study: ImageNet, 224 px"))
            ):
                ax = axes[i, j]
                d = df[df["study_layer"] == layer].assign(rule=lambda f: f["rule"].map(RULE_LABELS))
                sns.lineplot(
                    data=d,
                    x="ratio",
                    y=y,
                    hue="rule",
                    hue_order=[RULE_LABELS[r] for r in order],
                    marker="o",
                    ax=ax,
                    legend=(i == 0 and j == len(layers_) - 1),
                )
                ax.set_title(f"{layer} ({who})", fontsize=9)
                ax.set_xlabel("speed-up ratio of the layer" if i == 1 else "")
                ax.set_ylabel("increased top-1 error (pp)" if i == 0 else "increased error (%), as reported")
        handles, labels = axes[0, -1].get_legend_handles_labels()
        if axes[0, -1].get_legend():
            axes[0, -1].get_legend().remove()
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=4 if len(layers_) > 2 else 2,
            frameon=False,
            bbox_to_anchor=(0.5, -0.06 if len(layers_) > 2 else -0.1),
        )
        fig.suptitle("single-layer channel pruning, no fine-tuning: increased error of the final output", fontsize=11)
        fig.tight_layout()
        return fig

    return draw()


# ---------------------------------------------------------------- whole model
def fine_tune(model, run: RunData, epochs: int, learning_rate: float, seed: int = default("seed", PruningConfig)):
    """A short fine-tuning run of a pruned model: every layer, the run's summed cross-entropies,
    SGD(learning_rate, momentum 0.9), ``epochs`` passes over the training split."""
    import keras

    from elastic_lib.train.training import compile_model

    if epochs <= 0:
        return model
    keras.utils.set_random_seed(seed)
    compile_model(model, learning_rate, run.cfg, metrics="final", momentum=0.9)
    n = len(model.outputs)
    model.fit(
        run.x_train,
        [run.y_train] * n if n > 1 else run.y_train,
        batch_size=run.cfg.batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
    )
    return model


def whole_model(
    run: RunData,
    schedules=tuple(default("schedules", PruningConfig)),
    fine_tune_epochs: int = default("fine_tune_epochs", PruningConfig),
    fine_tune_lr: float = default("fine_tune_lr", PruningConfig),
    sample_images: int = default("sample_images", PruningConfig),
    points_per_image: int = default("points_per_image", PruningConfig),
    joint_epochs: int = default("joint_epochs", PruningConfig),
    seed: int = default("seed", PruningConfig),
):
    """Every schedule on ``run``'s model, without and then with a short fine-tuning run.
    Returns (evaluations: one row per output x model, long; the pruning logs)."""
    tqdm = _tqdm()

    images = run.sample_images(sample_images, seed)
    evals = [pruning.evaluate(run.model, run.x_test, run.y_test).assign(model="original", ratio="-")]
    logs = []
    for sch in tqdm(schedules, desc=f"whole model ({run.variant})", leave=False):
        pruned, log = pruning.prune_model(run.model, sch, images, points_per_image, joint_epochs, seed)
        logs.append(log.assign(ratio=sch))
        evals.append(pruning.evaluate(pruned, run.x_test, run.y_test).assign(model="ours, no fine-tune", ratio=sch))
        if fine_tune_epochs > 0:
            fine_tune(pruned, run, fine_tune_epochs, fine_tune_lr, seed)
            evals.append(pruning.evaluate(pruned, run.x_test, run.y_test).assign(model="ours, fine-tuned", ratio=sch))
    ev = pd.concat(evals, ignore_index=True).assign(run=run.name, variant=run.variant)
    return ev, pd.concat(logs, ignore_index=True).assign(run=run.name)


def whole_models(trained: list[RunData], *args, **kwargs):
    """``whole_model`` on each run; (evaluations, logs) of them all."""
    done = [whole_model(run, *args, **kwargs) for run in trained]
    return tuple(pd.concat(parts, ignore_index=True) for parts in zip(*done))


def whole_model_table(evals: pd.DataFrame) -> pd.DataFrame:
    """The study's layout for the final output (``pruning.whole_model_table``), one block per run."""
    blocks = []
    for name, ev in evals.groupby("run", sort=False):
        final = ev[ev["output"] == "final"]
        rows = [
            (r["model"], r["ratio"], final.iloc[[i]])
            for i, (_, r) in enumerate(final.iterrows())
            if r["model"] != "original"
        ]
        blocks.append(pruning.whole_model_table(rows, final[final["model"] == "original"]).assign(run=name))
    return pd.concat(blocks, ignore_index=True)


def exits_before_after(evals: pd.DataFrame) -> pd.DataFrame:
    """For an elastic run: top-1 error (%) of every output, unpruned and after each schedule."""
    ev = evals[evals["variant"] == "elastic"]
    if ev.empty:
        return pd.DataFrame()
    ev = ev.assign(
        column=lambda d: np.where(
            d["model"] == "original",
            "unpruned",
            d["ratio"] + np.where(d["model"] == "ours, fine-tuned", " fine-tuned", ""),
        ),
        top1_err_pct=lambda d: 100 * d["top1_err"],
    )
    wide = ev.pivot_table(index="output", columns="column", values="top1_err_pct", sort=False).reset_index()
    cols = ["output", "unpruned"] + [c for c in wide.columns if c not in ("output", "unpruned")]
    return wide[cols]


def write(tables_dir: str, **frames: pd.DataFrame) -> list[str]:
    return [write_csv(tables_dir, f"{name}.csv", df) for name, df in frames.items() if df is not None and not df.empty]


def trained_on(run: RunData) -> str:
    """What the model was trained on, for figure titles: ``ours: cifar10, 32 px``."""
    return f"ours: {run.cfg.dataset}, {run.cfg.image_size} px"


def study_caption(run: RunData, sample_images: int, points_per_image: int) -> str:
    c = run.cfg
    return (
        f"VGG16 trained from scratch on {c.dataset} ({len(run.y_train)} training, {len(run.y_test)} test images, "
        f"{c.image_size}x{c.image_size} px); points for selection and least squares: {points_per_image} per image "
        f"from {sample_images} training images; errors on the test images, final output; no fine-tuning unless "
        "stated. Costs: kernel MACs (the complexity walker's `kernel_macs`) and parameters of the whole pruned model. "
        "The study's numbers (VGG16, ImageNet-2012 validation, 224 px) are in brackets: compare orderings, not values."
    )


def output_dirs(profile: str, tables_dir: str = "", figures_dir: str = "") -> tuple[str, str]:
    """Where the study writes: the given folders (``./run_all.sh``: results/<profile> and
    figures/<profile>), else $ELASTIC_INTERACTIVE_DIR or results/interactive, /pruning/<profile>."""
    from elastic_lib.control.paths import interactive_dir

    tables_dir = tables_dir or os.path.join(interactive_dir(), "pruning", profile)
    return tables_dir, figures_dir or os.path.join(tables_dir, "figures")


def _ratios(single: pd.DataFrame) -> str:
    return ", ".join(f"{r:g}" for r in sorted(set(single["ratio"][single["ratio"] > 1])))


def report(
    tables_dir: str, caption: str, single: pd.DataFrame, ranking: pd.DataFrame, evals: pd.DataFrame, logs: pd.DataFrame
) -> dict:
    """The CSVs and ``pruning_study.md`` (caption, single-layer table, rule ordering, whole-model
    table in the study's layout, every exit of the elastic VGG16 before and after pruning)."""
    whole = whole_model_table(evals)
    exits = exits_before_after(evals)
    written = {
        "csv": write(
            tables_dir,
            single_layer=single,
            rule_ranking=ranking,
            whole_model=whole,
            whole_model_outputs=evals,
            pruning_log=logs,
            exits_before_after=exits,
        )
    }
    ref = pd.read_csv(os.path.join(REFERENCE, "pruning_whole_model.csv"))
    parts = [
        "# Channel pruning of VGG16 (after He et al. 2017)",
        "",
        caption,
        "",
        "## Single layer: increased top-1 error (percentage points) vs the layer's speed-up ratio "
        "[study's increased error, %]",
        "",
        single_layer_markdown(single),
        f"Rules, least damage first (mean over ratios {_ratios(single)}):",
        "",
        ranking_sentence(ranking),
        "",
        "## Whole model, final output (#correct of the test images; errors as fractions)",
        "",
    ]
    for name, block in whole.groupby("run", sort=False):
        parts += [
            f"**{name}**",
            "",
            block.drop(columns="run").astype(object).fillna("-").to_markdown(index=False, tablefmt="github"),
            "",
        ]
    parts += [
        "The study's (ImageNet-2012 validation, 50,000 images):",
        "",
        ref.drop(columns="source").astype(object).fillna("-").to_markdown(index=False, tablefmt="github"),
        "",
    ]
    if not exits.empty:
        parts += [
            "## Elastic VGG16: top-1 error (%) of every output before and after pruning",
            "",
            exits.to_markdown(index=False, tablefmt="github", floatfmt=".2f"),
            "",
        ]
    path = os.path.join(tables_dir, "pruning_study.md")
    from elastic_lib.control.results import atomic_write_text

    atomic_write_text(path, "\n".join(parts))
    written["markdown"] = path
    return written
