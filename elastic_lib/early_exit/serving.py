"""Early exit for serving: batches in which the images that exited leave the batch, a SavedModel
whose signature takes images and a threshold, and every exit as a TensorFlow Lite model.

``batched_early_exit(staged, x, threshold)``: at each stage the images whose confidence passes the
threshold are written to the result (``tf.tensor_scatter_nd_update``) and removed from the batch
(``tf.boolean_mask``), so later segments run on the images still undecided only. The decisions
are the per-image policy's (``early_exit.staged.dynamic_exit``): the first exit whose confidence passes,
the final output otherwise.

``export(model, path, criterion)`` writes a SavedModel (Keras' ``ExportArchive``) with one
endpoint, ``serve(images, threshold) -> {"probabilities", "exit_index"}`` (exit_index 0-based,
n_exits = the final output); ``tf.saved_model.load(path).serve(...)`` runs it with no workbook
code. ``export_tflite(model, folder)`` converts each output's own sub-model (prefix + head) to
``<folder>/<output>.tflite``.
"""

from __future__ import annotations

import os

import numpy as np

from elastic_lib.control import backend
from elastic_lib.control.config import default
from elastic_lib.early_exit.staged import StagedModel, _check_criterion, tf_confidence, threshold_to_confidence
from elastic_lib.models.exits import short_output_names


def _on_rows(sub, h):
    """``sub(h)``, or an empty result when no image is left (TensorFlow's CPU convolutions
    mishandle empty batches: a later BatchNorm sees the input's channel count)."""
    import tensorflow as tf

    empty = tf.zeros([0, *sub.outputs[0].shape[1:]], tf.float32)
    return tf.cond(tf.shape(h)[0] > 0, lambda: tf.cast(sub(h, training=False), tf.float32), lambda: empty)


def batched_early_exit(staged: StagedModel, x, confidence_threshold):
    """(probabilities [B, C], exit index [B]) of the dynamic policy for a batch, images that exit
    leaving the batch. ``confidence_threshold``: already in confidence units
    (``early_exit.threshold_to_confidence``). Traceable: call it inside a ``tf.function``."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    n = tf.shape(x)[0]
    classes = staged.model.outputs[-1].shape[-1]
    probs = tf.zeros([n, classes], tf.float32)
    chosen = tf.fill([n], staged.n_exits)
    rows = tf.range(n)
    h = x
    for i in range(staged.n_exits):
        h = _on_rows(staged.segments[i], h)
        p = _on_rows(staged.heads[i], h)
        done = tf_confidence(p, staged.criterion, axis=-1) >= confidence_threshold
        where = tf.boolean_mask(rows, done)[:, None]
        probs = tf.tensor_scatter_nd_update(probs, where, tf.boolean_mask(p, done))
        chosen = tf.tensor_scatter_nd_update(chosen, where, tf.fill([tf.shape(where)[0]], i))
        h, rows = tf.boolean_mask(h, ~done), tf.boolean_mask(rows, ~done)
    probs = tf.tensor_scatter_nd_update(probs, rows[:, None], _on_rows(staged.tail, h))
    return probs, chosen


class BatchedEarlyExit:
    """A compiled batched early exit for one model and criterion: ``predict(x, threshold)`` with
    ``threshold`` in the policy's units (max_prob: exit when max prob >= t; entropy: when
    entropy <= t); returns numpy (probabilities, exit index)."""

    def __init__(self, model, criterion: str = default("exit_criterion")):
        backend.require_tensorflow("BatchedEarlyExit (tf.cond on row subsets)")
        import tensorflow as tf

        self.staged = StagedModel(model, criterion)
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._fn = tf.function(
            lambda x, t: batched_early_exit(self.staged, x, t), input_signature=[spec, tf.TensorSpec([], tf.float32)]
        )

    def predict(self, x, threshold: float):
        import tensorflow as tf

        t = tf.constant(threshold_to_confidence(threshold, self.staged.criterion), tf.float32)
        p, i = self._fn(tf.convert_to_tensor(x, tf.float32), t)
        return p.numpy(), i.numpy()


def export(model, path: str, criterion: str = default("exit_criterion")) -> str:
    """A SavedModel at ``path`` whose ``serve(images [B, H, W, 3] float32, threshold [] float32)``
    returns {"probabilities": [B, C], "exit_index": [B] int32} of the batched early exit;
    ``threshold`` in the policy's units (see ``BatchedEarlyExit``). Images preprocessed as the
    model was trained."""
    backend.require_tensorflow("SavedModel export")
    import keras
    import tensorflow as tf

    _check_criterion(criterion)
    staged = StagedModel(model, criterion)
    sign = -1.0 if criterion == "entropy" else 1.0  # threshold_to_confidence, traced

    def serve(images, threshold):
        p, i = batched_early_exit(staged, images, sign * threshold)
        return {"probabilities": p, "exit_index": i}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        serve,
        input_signature=[
            tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="images"),
            tf.TensorSpec([], tf.float32, name="threshold"),
        ],
    )
    archive.write_out(path, verbose=False)
    return path


def export_tflite(model, folder: str) -> dict[str, str]:
    """Each output computed alone (its staged prefix + head) as ``<folder>/<output>.tflite``,
    batch 1; {output name: path}."""
    backend.require_tensorflow("TensorFlow Lite export")
    import tensorflow as tf

    staged = StagedModel(model)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for k, name in enumerate(short_output_names(model)):
        fn = staged.fixed(k)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        path = os.path.join(folder, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(converter.convert())
        paths[name] = path
    return paths


def tflite_predict(path: str, x: np.ndarray) -> np.ndarray:
    """Run a converted output on a batch of one (XNNPACK delegate by default)."""
    backend.require_tensorflow("the TensorFlow Lite interpreter")
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=path)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], np.asarray(x, np.float32))
    interp.invoke()
    return interp.get_tensor(out["index"])


def _convert(fn) -> bytes:
    """A batch-1 ``tf.function`` (input signature fixed) as a TensorFlow Lite flatbuffer."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()


class _Stage:
    """One TFLite interpreter with numpy views on its tensors (no copies besides the input)."""

    def __init__(self, flatbuffer: bytes, threads: int | None):
        import tensorflow as tf

        self.interp = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads)
        self.interp.allocate_tensors()
        self._in = self.interp.tensor(self.interp.get_input_details()[0]["index"])
        # outputs in signature order: (features, probabilities) for a stage, (probabilities,) for the tail
        self._outs = [
            self.interp.tensor(d["index"]) for d in sorted(self.interp.get_output_details(), key=lambda d: d["name"])
        ]

    def __call__(self, x):
        self._in()[...] = x
        self.interp.invoke()
        return [o() for o in self._outs]


class TFLiteCascade:
    """The lean staged forward for batch-1 early exit: stage i is one TensorFlow Lite model that
    runs segment i *and* exit head i (features and probabilities out; the tail is the last stage),
    so the policy costs one interpreter call per stage and one host-side comparison, with no
    TensorFlow function call, graph ``tf.cond`` or Keras sub-model dispatch on the way.
    ``predict(x, threshold)`` returns (exit index, probabilities) exactly as
    ``StagedModel.predict_dynamic`` decides (same first exit whose confidence passes), up to
    TFLite's float rounding. ``final_alone(x)`` is the final output as one TFLite model, the
    reference a speed-up is measured against in the same runtime."""

    def __init__(self, model, criterion: str = default("exit_criterion"), threads: int | None = None):
        backend.require_tensorflow("TFLiteCascade (TensorFlow Lite)")
        import tensorflow as tf

        staged = StagedModel(model, criterion)
        self.criterion, self.n_exits = criterion, staged.n_exits
        stages = []
        for i in range(staged.n_exits):
            seg, head = staged.segments[i], staged.heads[i]
            spec = tf.TensorSpec([1, *seg.inputs[0].shape[1:]], tf.float32)

            def step(h, seg=seg, head=head):
                h = seg(h, training=False)
                return {"a_features": h, "b_probabilities": head(h, training=False)}

            stages.append(_Stage(_convert(tf.function(step, input_signature=[spec])), threads))
        tail_spec = tf.TensorSpec([1, *staged.tail.inputs[0].shape[1:]], tf.float32)
        tail = tf.function(lambda h: {"b_probabilities": staged.tail(h, training=False)}, input_signature=[tail_spec])
        self.stages, self.tail = stages, _Stage(_convert(tail), threads)
        self.final = _Stage(_convert(staged.fixed(staged.n_exits)), threads)

    def predict(self, x, threshold: float):
        from elastic_lib.early_exit.staged import confidence

        t = threshold_to_confidence(threshold, self.criterion)
        h = x
        for i, stage in enumerate(self.stages):
            h, p = stage(h)
            if confidence(p, self.criterion)[0] >= t:
                return i, p.copy()
        return self.n_exits, self.tail(h)[0].copy()

    def final_alone(self, x):
        return self.final(x)[0]
