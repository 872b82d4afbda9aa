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
bottleneck.
"""

from __future__ import annotations

from .common import clear_keras, fit_step_seconds, fmt, load_images, log, median, paired_ratio, time_interleaved

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
        "image_size": image_size,
        "source_size": int(x.shape[1]),
        "batch": BATCH,
        "rounds": repeats,
        "steps_per_round": steps,
        "host_images_per_s": host,
        "in_model_images_per_s": inside,
        "in_model_over_host": ratio,
    }
    return {
        "figure": f"9. Upsampling inside the model vs on the host (training, {image_size} px)",
        "data": data,
        "rows": [row],
        "measured": f"in model {fmt(ratio, 2)}x host images/s",
        "target": "none (measured only)",
        "pass": None,
        "verdict": f"resize in the model: {fmt(ratio, 2)}x the host-resize training images/s at {image_size} px",
    }
