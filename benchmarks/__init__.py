"""Benchmarks of the elastic_lib workbook: ``python -m benchmarks [--quick] [--out benchmarks/RESULTS.md]``.

One module per figure, each exposing ``run(quick: bool) -> dict`` (measured values plus a
one-line ``verdict`` against its target):

1. ``overhead``          training-step time of the elastic model over its plain backbone
2. ``pipeline``          input-pipeline throughput over the model's training consumption
3. ``memory``            peak RSS of one epoch through the 224x224 pipeline vs. the resized dataset
4. ``complexity_bench``  the Keras-graph FLOPs walker vs. TensorFlow's profiler
5. ``early_exit_bench``  measured early-exit speed-up next to its FLOPs ratio; naive vs. compiled
"""
import os as _os

# Before TensorFlow is imported anywhere (same settings as elastic_lib and scripts/env.sh).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

FIGURES = ("overhead", "pipeline", "memory", "complexity_bench", "early_exit_bench")
