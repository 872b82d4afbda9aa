"""Benchmarks of the elastic_lib workbook: ``python -m benchmarks [--quick] [--out benchmarks/RESULTS.md]``.

One module per figure, each exposing ``run(quick: bool) -> dict`` (measured values plus a
one-line ``verdict`` against its target):

1. ``overhead``          training-step time of the elastic model over its plain backbone
2. ``pipeline``          input-pipeline throughput over the model's training consumption
3. ``memory``            peak RSS of one epoch through the 224x224 pipeline vs. the resized dataset
4. ``complexity_bench``  the Keras-graph FLOPs walker vs. TensorFlow's profiler
5. ``early_exit_bench``  measured early-exit speed-up next to its FLOPs ratio; naive vs. compiled
6. ``early_exit_efficiency``  speed-up / FLOPs ratio of the dynamic policy (tf.cond and the lean
   TFLite cascade, 32 and 224 px), no-exit overhead, every exit alone in TFLite, batch 64
7. ``early_exit_policies``  budgeted early exit and per-exit calibration on trained runs
8. ``backends``          train steps/s of each Keras backend over TensorFlow's, side by side
9. ``resize_placement``  training images/s with the 32 -> 224 upsampling inside the model vs on the host
10. ``early_exit_zoo``   the policy zoo on trained runs (curves with bands, paired tests, risk control) and a
    latency budget met on the TFLite cascade
"""

import elastic_lib

elastic_lib.setup_environment()  # before TensorFlow is imported

FIGURES = (
    "overhead",
    "pipeline",
    "memory",
    "complexity_bench",
    "early_exit_bench",
    "early_exit_efficiency",
    "early_exit_policies",
    "backends",
    "resize_placement",
    "early_exit_zoo",
)
