"""Figure 1: elastic overhead in training.

Steady-state training-step time of the elastic model (every default exit) over the same
backbone without exits, both compiled exactly as ``elastic_lib.train.training.compile_model`` does with
``RunConfig()``'s defaults (SGD + momentum, one sparse cross-entropy per output, uniform loss weights, per-output
accuracy), at 32x32, batch 32, on one fixed preprocessed batch of real images repeated by
tf.data. Steps run through ``model.fit`` (the real training loop; ``train_on_batch`` resets
every metric on every call, a per-call cost that grows with the number of outputs and that
``fit`` pays once per epoch). Blocks of N steps, after warm-up, interleaved
baseline / elastic / elastic-with-final-metric-only, median of the per-block ratios.

The third variant (accuracy only on the final output) separates the cost of the exit heads
and their losses from the cost of the 2 x (exits) extra metric updates. The FLOPs ratio
(elastic all-outputs FLOPs / baseline FLOPs, ``model_complexity(model)['flops']``) is the
expected lower bound of the overhead.
"""

from __future__ import annotations

from .common import clear_keras, fit_step_seconds, fmt, load_images, log, median, paired_ratio, spread, time_interleaved

TARGET = 1.10
BACKBONES = ("mobilenet_0.75", "resnet50")
IMAGE_SIZE = 32
BATCH = 32
NUM_CLASSES = 10


def _fixed_batch(x, y, preprocess, n_outputs):
    """One preprocessed batch from elastic_lib's own pipeline, repeated forever."""
    import tensorflow as tf

    from elastic_lib.data.pipeline import make_pipeline

    xb, ys = next(iter(make_pipeline(x[:BATCH], y[:BATCH], IMAGE_SIZE, preprocess, BATCH, n_outputs)))
    return tf.data.Dataset.from_tensors((xb, ys)).repeat()


def measure_backbone(
    backbone: str, x, y, steps: int, repeats: int, warmup_steps: int, interleaved_warmup: int = 1
) -> dict:
    import keras

    from elastic_lib.control.config import RunConfig
    from elastic_lib.models.backbones import preprocess_input
    from elastic_lib.models.complexity import model_complexity
    from elastic_lib.models.exits import build_elastic_model
    from elastic_lib.train.training import compile_model

    cfg = RunConfig()
    lr = cfg.phase2_learning_rate  # phase 2: everything trainable (the bulk of training)
    keras.utils.set_random_seed(0)
    base = build_elastic_model(backbone, NUM_CLASSES, IMAGE_SIZE, exits="none")
    elastic = build_elastic_model(backbone, NUM_CLASSES, IMAGE_SIZE, exits="all")
    elastic_fm = build_elastic_model(backbone, NUM_CLASSES, IMAGE_SIZE, exits="all")
    elastic_fm.set_weights(elastic.get_weights())
    compile_model(base, lr, cfg)
    compile_model(elastic, lr, cfg)
    compile_model(elastic_fm, lr, cfg, metrics="final")
    flops_base = model_complexity(base)["flops"]
    flops_el = model_complexity(elastic)["flops"]

    pre = preprocess_input(backbone)
    data = {
        "baseline": (base, _fixed_batch(x, y, pre, 1)),
        "elastic": (elastic, _fixed_batch(x, y, pre, len(elastic.outputs))),
        "elastic_final_metric_only": (elastic_fm, _fixed_batch(x, y, pre, len(elastic.outputs))),
    }

    def block(name, n):
        model, ds = data[name]

        return lambda: fit_step_seconds(model, ds, n)

    for name in data:  # trace + warm-up (first call compiles the train function)
        log(f"  overhead {backbone}: trace + warm-up {name}")
        block(name, warmup_steps)()
    times = time_interleaved(
        {k: block(k, steps) for k in data}, warmup=interleaved_warmup, repeats=repeats, self_timed=True
    )
    ms = {k: 1e3 * median(v) for k, v in times.items()}
    out = {
        "backbone": backbone,
        "n_outputs": len(elastic.outputs),
        "steps_per_block": steps,
        "repeats": repeats,
        "baseline_step_ms": ms["baseline"],
        "elastic_step_ms": ms["elastic"],
        "elastic_final_metric_only_step_ms": ms["elastic_final_metric_only"],
        "ratio": paired_ratio(times["elastic"], times["baseline"]),
        "ratio_final_metric_only": paired_ratio(times["elastic_final_metric_only"], times["baseline"]),
        "flops_ratio": flops_el / flops_base,
        "baseline_flops": flops_base,
        "elastic_flops": flops_el,
        "noise_spread": max(spread(v) for v in times.values()),
        "images_per_s_elastic": BATCH / (ms["elastic"] / 1e3),
    }
    # share of the overhead that the per-exit accuracy metrics explain (only meaningful above noise)
    out["metric_share_of_overhead"] = (
        (out["ratio"] - out["ratio_final_metric_only"]) / (out["ratio"] - 1) if out["ratio"] > 1.02 else float("nan")
    )
    base = elastic = elastic_fm = data = None  # release them (the closures above are done)
    clear_keras()
    return out


def run(quick: bool = False) -> dict:
    x, y, source = load_images(limit=BATCH)
    rows = []
    # (steps per block, timed blocks, steps in the tracing call, untimed interleaved blocks)
    plan = {
        "mobilenet_0.75": (4, 3, 2, 0) if quick else (11, 7, 3, 1),
        "resnet50": None if quick else (3, 5, 2, 0),
    }  # ~2 s/step here: quick mode skips it
    for backbone in BACKBONES:
        if plan[backbone] is None:
            log(f"overhead: {backbone} skipped in --quick mode")
            continue
        steps, repeats, warm, iwarm = plan[backbone]
        log(f"overhead: {backbone} ({steps} steps x {repeats} interleaved repeats)")
        rows.append(measure_backbone(backbone, x, y, steps, repeats, warm, iwarm))
    worst = max(r["ratio"] for r in rows)
    parts = [
        f"{r['backbone']} {r['ratio']:.3f}x (final-metric-only {r['ratio_final_metric_only']:.3f}x, "
        f"FLOPs {r['flops_ratio']:.3f}x)"
        for r in rows
    ]
    ok = worst <= TARGET
    verdict = ("PASS" if ok else "FAIL") + f": step-time ratio {'; '.join(parts)}; target <= {TARGET}"
    if not ok:
        bad = [r for r in rows if r["ratio"] > TARGET]
        reasons = []
        for r in bad:
            extra = r["elastic_step_ms"] - r["baseline_step_ms"]
            metric = r["elastic_step_ms"] - r["elastic_final_metric_only_step_ms"]
            reasons.append(
                f"{r['backbone']}: +{extra:.1f} ms/step for {r['n_outputs'] - 1} exits, of which "
                f"{metric:.1f} ms is the per-exit accuracy metrics; FLOPs only +"
                f"{100 * (r['flops_ratio'] - 1):.2f}%, so the rest is per-op overhead of "
                f"{r['n_outputs'] - 1} tiny heads/losses/gradients, not arithmetic"
            )
        verdict += " -- " + " | ".join(reasons)
    notes = [f"{b} skipped in --quick mode" for b in BACKBONES if plan[b] is None]
    noisy = [r["backbone"] for r in rows if r["noise_spread"] > 0.1]
    if noisy:
        notes.append(
            f"noisy timings for {', '.join(noisy)} (max-min spread > 10% of the median; another job on "
            "the machine?): the per-repeat ratios are paired, but treat the third digit with care"
        )
    if notes:
        verdict += "".join(f"; NOTE: {n}" for n in notes)
    return {
        "figure": "1. Elastic training overhead (32x32, batch 32)",
        "data": source,
        "rows": rows,
        "notes": notes,
        "measured": ", ".join(f"{r['backbone']} {fmt(r['ratio'])}x" for r in rows),
        "target": f"<= {TARGET}",
        "pass": ok,
        "verdict": verdict,
    }


if __name__ == "__main__":
    from .common import standalone

    standalone(run)
