"""Figure 9: where the 32 -> image_size upsampling runs, on the host or inside the model.

Training images/s of the elastic MobileNet-0.75 (13 exits + final head, batch 32) fed 32-px
images through the run's input path (``loader.make_input``, ``auto``: tf.data on TensorFlow,
the ``PyDataset`` loader elsewhere), shuffled by one ``EpochPlan``: (a) ``host``: the input path
resizes to image_size and the model takes image_size images (the default); (b) ``in_model``: the
input path ships the 32-px images and the model's first layer (``resize_in_model``,
``keras.layers.Resizing``) upsamples them (``RunConfig.resize_in_model``). Same weights, same
batches; steady-state step time of ``fit`` (``fit_step_seconds``), the two placements in
interleaved rounds. Ratio = in_model images/s over host images/s, measured in this run. No
target: on a CPU both placements share the same cores, so the ratio mostly shows the cost of the
host's copy of the large images; the option is for accelerators, where the host stops being the
bottleneck. What the host can feed an accelerator is the second measurement: images/s of the
input path alone (no model), each path (``tf_data``; ``pydataset``, the PyDataset path read batch by
batch), shipping image_size or 32-px images. Figure ``benchmarks/figures/resize_placement.png``.
"""

from __future__ import annotations

import os
import time

from .common import (
    ROOT,
    clear_keras,
    fit_step_seconds,
    fmt,
    load_images,
    log,
    machine_info,
    median,
    paired_ratio,
    time_interleaved,
)

BACKBONE = "mobilenet_0.75"
BATCH = 32


def _trainer(x, y, image_size: int, in_model: bool, steps: int):
    """A callable that trains ``steps`` steps and returns seconds per step."""
    import keras

    from elastic_lib.control.config import RunConfig
    from elastic_lib.data.pipeline import EpochPlan, make_input
    from elastic_lib.models.backbones import preprocess_input
    from elastic_lib.models.exits import build_elastic_model
    from elastic_lib.train.training import compile_model

    keras.utils.set_random_seed(0)
    source = x.shape[1]
    model = build_elastic_model(BACKBONE, 10, image_size, source_size=source if in_model else None)
    compile_model(model, 0.01, RunConfig(), metrics="final")
    size = source if in_model else image_size
    plan = EpochPlan(len(x), seed=0, phase=2)
    stream = iter(
        make_input("auto", x, y, size, preprocess_input(BACKBONE), BATCH, len(model.outputs), plan, epochs=1000)
    )

    def generator():
        while True:
            yield next(stream)

    def run():
        return fit_step_seconds(model, generator(), steps, skip_first=1)

    return run


FIGURE = os.path.join(ROOT, "benchmarks", "figures", "resize_placement.png")


def input_only(x, y, size: int, kind: str, batches: int) -> float:
    """Images/s the input path ``kind`` alone delivers at ``size`` px (after one warm-up batch)."""
    from elastic_lib.data.pipeline import EpochPlan, make_input
    from elastic_lib.models.backbones import preprocess_input

    ds = make_input(kind, x, y, size, preprocess_input(BACKBONE), BATCH, 14, EpochPlan(len(x), seed=0, phase=2))
    stream = None if kind == "pydataset" else iter(ds)
    batch_at = (lambda i: ds[i]) if stream is None else (lambda i: next(stream))
    n = min(batches, len(x) // BATCH - 1)
    batch_at(0)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        batch_at(i)
    return n * BATCH / (time.perf_counter() - t0)


def plot(row: dict, path: str = FIGURE) -> None:
    from elastic_lib.analysis import plots

    fig, (left, right) = plots.plt.subplots(1, 2, figsize=(9, 3.4))
    size = row["image_size"]
    train = [row["host_images_per_s"], row["in_model_images_per_s"]]
    left.bar_label(left.bar(["host resize", "in the model"], train, color=["C0", "C1"]), fmt="%.1f", fontsize=8)
    left.set(ylabel="training images/s", title=f"training, {size} px, batch {BATCH}")
    kinds = [k for k in ("tf_data", "pydataset") if f"input_{k}_host_images_per_s" in row]
    w = 0.38
    for j, (where, label) in enumerate((("host", f"ships {size} px"), ("in_model", "ships 32 px"))):
        vals = [row[f"input_{k}_{where}_images_per_s"] for k in kinds]
        bars = right.bar([i + (j - 0.5) * w for i in range(len(kinds))], vals, w, label=label, color=f"C{j}")
        right.bar_label(bars, fmt="%.0f", fontsize=8)
    right.set_xticks(range(len(kinds)), kinds)
    right.set(yscale="log", ylabel="images/s (log)", title="the input path alone (the host's ceiling)")
    right.legend(frameon=False, fontsize=8)
    fig.suptitle(
        f"Where the 32 -> {size} px upsampling runs: MobileNet-0.75 elastic, {row['backend']} on {row['device']}",
        fontsize=10,
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plots.plt.close(fig)


def run(quick: bool = False) -> dict:
    image_size, steps, repeats = (96, 4, 1) if quick else (224, 8, 3)
    x, y, data = load_images(limit=BATCH * 64)
    log(f"resize_placement: {image_size} px, {repeats} rounds of {steps} steps")
    fns = {"host": _trainer(x, y, image_size, False, steps), "in_model": _trainer(x, y, image_size, True, steps)}
    got = time_interleaved(fns, warmup=1, repeats=repeats, self_timed=True)
    clear_keras()
    host, inside = (BATCH / median(got[k]) for k in ("host", "in_model"))
    ratio = paired_ratio(got["host"], got["in_model"])  # seconds host / seconds in_model = images/s ratio
    from elastic_lib.control import backend

    row = {
        "backend": backend.label(),
        "device": f"{machine_info()['cores']} CPU cores",
        "image_size": image_size,
        "source_size": int(x.shape[1]),
        "batch": BATCH,
        "rounds": repeats,
        "steps_per_round": steps,
        "host_images_per_s": host,
        "in_model_images_per_s": inside,
        "in_model_over_host": ratio,
    }
    from elastic_lib.data.pipeline import resolve

    for kind in ("tf_data", "pydataset") if resolve("auto") == "tf_data" else ("pydataset",):
        for where, size in (("host", image_size), ("in_model", int(x.shape[1]))):
            row[f"input_{kind}_{where}_images_per_s"] = input_only(x, y, size, kind, 8 if quick else 40)
        row[f"input_{kind}_in_model_over_host"] = (
            row[f"input_{kind}_in_model_images_per_s"] / row[f"input_{kind}_host_images_per_s"]
        )
    kinds = [k for k in ("tf_data", "pydataset") if f"input_{k}_host_images_per_s" in row]
    if not quick:
        plot(row)
    return {
        "figure": f"9. Upsampling inside the model vs on the host (training, {image_size} px)",
        "data": data,
        "rows": [row],
        "measured": f"in model {fmt(ratio, 2)}x host images/s",
        "target": "none (measured only)",
        "pass": None,
        "verdict": f"resize in the model: {fmt(ratio, 2)}x the host-resize training images/s at {image_size} px; "
        f"the input path alone delivers {fmt(row[f'input_{kinds[0]}_in_model_over_host'], 3)}x the images/s "
        f"shipping 32 px ({kinds[0]})",
    }
