"""Figure 2: input-pipeline headroom.

Images/s of ``elastic_lib.data.pipeline.make_pipeline`` alone (batch 32, resize from 32x32 to the model
size, MobileNet ``preprocess_input``, labels repeated once per output; iterated from Python,
nothing consumes the batches) over the images/s that the elastic MobileNet-0.75 consumes in
training (``compile_model``, fit on one fixed in-memory batch, steady-state step time). The
pipeline must outrun training by a wide margin (>= 3x at 32x32) so that training never waits
on data; at 224x224 the model consumption is measured from a few steps only.
"""

from __future__ import annotations

import time

from .common import clear_keras, fit_step_seconds, fmt, load_images, log, median, spread

TARGET = 3.0
BACKBONE = "mobilenet_0.75"
BATCH = 32
NUM_CLASSES = 10


def pipeline_images_per_s(x, y, image_size: int, n_outputs: int, repeats: int) -> list[float]:
    """Images/s of whole passes over (x, y) through make_pipeline, after one warm-up pass
    over a few batches (tf.data autotuning, first-call costs)."""
    from elastic_lib.data.pipeline import make_pipeline
    from elastic_lib.models.backbones import preprocess_input

    pre = preprocess_input(BACKBONE)
    ds = make_pipeline(x, y, image_size, pre, BATCH, n_outputs)
    for _ in ds.take(4):  # warm-up: builds the map function and the thread pools
        pass
    rates = []
    for _ in range(repeats):
        n = 0
        t0 = time.perf_counter()
        for xb, _yb in ds:
            n += int(xb.shape[0])
        rates.append(n / (time.perf_counter() - t0))
    return rates


def model_images_per_s(x, y, image_size: int, steps: int, repeats: int) -> tuple[list[float], int]:
    """Images/s the elastic model trains on (fixed batch, steady state); also its output count."""
    import keras
    import tensorflow as tf

    from elastic_lib.control.config import RunConfig
    from elastic_lib.data.pipeline import make_pipeline
    from elastic_lib.models.backbones import preprocess_input
    from elastic_lib.models.exits import build_elastic_model
    from elastic_lib.train.training import compile_model

    cfg = RunConfig()
    keras.utils.set_random_seed(0)
    model = build_elastic_model(BACKBONE, NUM_CLASSES, image_size, exits="all")
    compile_model(model, cfg.phase2_learning_rate, cfg)
    n_out = len(model.outputs)
    batch = next(iter(make_pipeline(x[:BATCH], y[:BATCH], image_size, preprocess_input(BACKBONE), BATCH, n_out)))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    if repeats == 0:  # few steps only: one call that traces, then `steps` timed steps
        rates = [BATCH / fit_step_seconds(model, ds, steps + 2, skip_first=1)]
    else:
        fit_step_seconds(model, ds, 2)  # trace + warm-up
        rates = [BATCH / fit_step_seconds(model, ds, steps) for _ in range(repeats)]
    del model
    clear_keras()
    return rates, n_out


def run(quick: bool = False) -> dict:
    x, y, source = load_images(limit=2000 if quick else None)
    rows = []
    # size: (pipeline passes, images for the pipeline, model steps per block, model blocks)
    plan = {
        32: (2 if quick else 3, len(x), 4 if quick else 10, 2 if quick else 3),
        224: (1, 640 if quick else len(x), 1 if quick else 2, 0),
    }
    for size, (passes, n_img, steps, blocks) in plan.items():
        log(f"pipeline: model consumption at {size}x{size}")
        m_rates, n_out = model_images_per_s(x, y, size, steps, blocks)
        log(f"pipeline: make_pipeline alone at {size}x{size} ({n_img} images x {passes} passes)")
        p_rates = pipeline_images_per_s(x[:n_img], y[:n_img], size, n_out, passes)
        p, m = median(p_rates), median(m_rates)
        rows.append(
            {
                "image_size": size,
                "pipeline_images_per_s": p,
                "model_train_images_per_s": m,
                "headroom": p / m,
                "pipeline_images": n_img,
                "pipeline_passes": passes,
                "model_steps_timed": steps * max(blocks, 1),
                "n_outputs": n_out,
                "pipeline_spread": spread(p_rates),
                "model_spread": spread(m_rates),
            }
        )
    r32 = rows[0]
    ok = r32["headroom"] >= TARGET
    verdict = (
        ("PASS" if ok else "FAIL") + f": at 32x32 the pipeline gives {r32['pipeline_images_per_s']:.0f} img/s vs "
        f"{r32['model_train_images_per_s']:.0f} img/s consumed ({r32['headroom']:.1f}x, target >= {TARGET}); "
        f"at 224x224 {rows[1]['pipeline_images_per_s']:.0f} vs {rows[1]['model_train_images_per_s']:.1f} img/s "
        f"({rows[1]['headroom']:.0f}x)"
    )
    return {
        "figure": "2. Input pipeline headroom (MobileNet-0.75 elastic)",
        "data": source,
        "rows": rows,
        "measured": f"{fmt(r32['headroom'])}x at 32, {fmt(rows[1]['headroom'])}x at 224",
        "target": f">= {TARGET} at 32",
        "pass": ok,
        "verdict": verdict,
    }


if __name__ == "__main__":
    from .common import standalone

    standalone(run)
