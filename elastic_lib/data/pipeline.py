"""Both input paths, fed from the same epoch plan: ``tf.data`` (TensorFlow's fast path,
``make_pipeline``) and NumPy batches in a ``keras.utils.PyDataset`` (every backend,
``ArrayBatches``); ``make_input`` picks one.

The PyDataset path:

Why ``PyDataset``: it is Keras' own loader, so ``fit``, ``evaluate`` and ``predict`` take it on
every backend (TensorFlow, JAX, PyTorch) with no extra dependency, and its batches are plain
NumPy arrays that can be compared with the ``tf.data`` path's. The stream is the ``tf.data``
path's, batch for batch: the same ``EpochPlan`` (order, flips, offsets), the same resize
(``keras.ops.image.resize``, bilinear, no antialiasing: ``tf.image.resize``'s default), the same
augmentation and the backbone's ``preprocess_input`` on the host. Which path a run uses:
``input_pipeline`` (``auto``: ``tf.data`` on TensorFlow, this one elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from elastic_lib.control.config import INPUT_PIPELINES as PIPELINES


# ---------------------------------------------------------------- epoch order (both input paths)
@dataclass(frozen=True)
class EpochPlan:
    """What every training step sees, as a pure function of (seed, phase, epoch): epoch ``e`` of
    phase ``phase`` visits the images in the order of ``numpy.random.default_rng([seed, phase, e])
    .permutation(n)`` (the identity when ``shuffle`` is off) and, with augmentation (``pad`` > 0),
    flips each image with probability 1/2 and translates it by up to ``pad`` pixels, drawn from the
    same generator. Both input paths (``tf.data`` and the backend-neutral ``ArrayBatches``) read their
    order from here, so they agree batch for batch, and a resumed run sees the order an
    uninterrupted one would have seen (``tf.data``'s own shuffle can be matched by neither)."""

    n: int
    seed: int = 0
    phase: int = 1
    shuffle: bool = True
    pad: int = 0

    def rows(self, epoch: int) -> np.ndarray:
        """(n, 4) int64: per position of the epoch, the image index, flip (0/1), dy and dx."""
        rng = np.random.default_rng([int(self.seed), int(self.phase), int(epoch)])
        out = np.zeros((self.n, 4), dtype=np.int64)
        out[:, 0] = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        if self.pad:
            out[:, 1] = rng.random(self.n) < 0.5
            out[:, 2:] = rng.integers(0, 2 * self.pad + 1, size=(self.n, 2))
        return out

    @property
    def varies(self) -> bool:
        """Whether epochs differ from one another (shuffled or augmented)."""
        return self.shuffle or self.pad > 0


def augment_pad(image_size: int) -> int:
    """Translation range of the augmentation: 1/8 of the image side (at least one pixel)."""
    return max(1, image_size // 8)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


# ---------------------------------------------------------------- tf.data (the TensorFlow fast path)
def make_pipeline(
    x: np.ndarray,
    y: np.ndarray,
    image_size: int,
    preprocess,
    batch_size: int,
    num_outputs: int = 1,
    plan: EpochPlan | None = None,
    epochs: int = 1,
    first_epoch: int = 0,
):
    """Batches of (preprocessed images at image_size, labels repeated once per model output) for
    epochs ``first_epoch .. first_epoch + epochs - 1`` of ``plan`` (default: unshuffled, one epoch,
    which Keras iterates again every epoch). Each epoch is batched on its own (a last, smaller
    batch when ``batch_size`` does not divide n); ``fit`` takes a multi-epoch stream with
    ``steps_per_epoch=num_batches(n, batch_size)``. Resizing, augmentation (``plan.pad``: flip,
    then translate by (dy, dx) - pad with zero padding) and preprocessing run vectorised per batch.
    TensorFlow only: ``ArrayBatches`` is the same stream for every backend."""
    from elastic_lib.control.backend import require_tensorflow

    require_tensorflow("the tf.data input pipeline")
    import tensorflow as tf

    plan = plan or EpochPlan(len(x), shuffle=False)
    n, pad = len(x), plan.pad
    xt, yt = tf.constant(x), tf.constant(y)

    def epoch_rows(e):
        if not plan.varies:
            return tf.data.Dataset.from_tensor_slices(plan.rows(0)).batch(batch_size)
        rows = tf.numpy_function(lambda k: plan.rows(int(k)), [e], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(rows, [n, 4])).batch(batch_size)

    def prep(rows):
        xb = tf.image.resize(tf.cast(tf.gather(xt, rows[:, 0]), tf.float32), (image_size, image_size))
        if pad:
            xb = tf.where(tf.cast(rows[:, 1], tf.bool)[:, None, None, None], tf.reverse(xb, axis=[2]), xb)
            xb = tf.pad(xb, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
            span = tf.range(image_size, dtype=tf.int64)
            xb = tf.gather(xb, rows[:, 2:3] + span[None], axis=1, batch_dims=1)
            xb = tf.gather(xb, rows[:, 3:4] + span[None], axis=2, batch_dims=1)
        return preprocess(xb), tuple([tf.gather(yt, rows[:, 0])] * num_outputs)

    ds = tf.data.Dataset.range(first_epoch, first_epoch + epochs).flat_map(epoch_rows)
    ds = ds.apply(tf.data.experimental.assert_cardinality(epochs * num_batches(n, batch_size)))
    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def resize(x: np.ndarray, image_size: int) -> np.ndarray:
    """float32 NHWC images resized to image_size (bilinear, half-pixel centres, no antialiasing)."""
    if x.shape[1] == image_size and x.shape[2] == image_size:
        return x
    out = keras.ops.image.resize(x, (image_size, image_size), interpolation="bilinear", antialias=False)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)


def flip_translate(x: np.ndarray, rows: np.ndarray, pad: int) -> np.ndarray:
    """Flip the images whose ``rows[:, 1]`` is 1, then shift each by (dy, dx) - pad (zero padding)."""
    x = np.where(rows[:, 1].astype(bool)[:, None, None, None], x[:, :, ::-1], x)
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    span = np.arange(x.shape[1] - 2 * pad)
    x = np.take_along_axis(x, (rows[:, 2:3] + span[None])[:, :, None, None], axis=1)
    return np.take_along_axis(x, (rows[:, 3:4] + span[None])[:, None, :, None], axis=2)


class ArrayBatches(keras.utils.PyDataset):
    """Epochs ``first_epoch ..`` of ``plan`` over (x, y) as one stream of NumPy batches (epoch by
    epoch, ``num_batches(n, batch_size)`` each); ``fit`` reads it with that ``steps_per_epoch``.
    Items: (preprocessed float32 images, labels repeated once per model output)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        image_size: int,
        preprocess,
        batch_size: int,
        num_outputs: int = 1,
        plan: EpochPlan | None = None,
        epochs: int = 1,
        first_epoch: int = 0,
        workers: int = 1,
    ):
        # threads prepare the next batches while the device computes; Keras hands them over in order.
        # A stream of one epoch only: Keras' threaded reader starts again at batch 0 every epoch, so
        # a multi-epoch stream read by threads would train on its first epoch's batches every time
        workers = max(1, workers) if epochs == 1 else 1
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.x, self.y, self.image_size, self.preprocess = x, y, image_size, preprocess
        self.batch_size, self.num_outputs, self.epochs, self.first_epoch = batch_size, num_outputs, epochs, first_epoch
        self.plan = plan or EpochPlan(len(x), shuffle=False)
        self.per_epoch = num_batches(len(x), batch_size)
        self._rows = (None, None)  # (epoch, its rows): one epoch's plan is drawn once

    def __len__(self) -> int:
        return self.epochs * self.per_epoch

    def epoch_rows(self, epoch: int) -> np.ndarray:
        cached = self._rows  # one read: worker threads may replace it meanwhile
        if cached[0] != epoch:
            cached = (epoch, self.plan.rows(epoch))
            self._rows = cached
        return cached[1]

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of a stream of {len(self)}")
        epoch, b = self.first_epoch + i // self.per_epoch, i % self.per_epoch
        rows = self.epoch_rows(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        xb = resize(self.x[rows[:, 0]].astype(np.float32), self.image_size)
        if self.plan.pad:
            xb = flip_translate(xb, rows, self.plan.pad)
        xb = np.asarray(self.preprocess(xb), dtype=np.float32)
        return xb, tuple([self.y[rows[:, 0]]] * self.num_outputs)


def resolve(kind: str) -> str:
    """``auto`` -> ``tf_data`` on TensorFlow, ``pydataset`` on another backend."""
    from elastic_lib.control import backend

    if kind not in PIPELINES:
        raise ValueError(f"unknown input_pipeline {kind!r}; valid: {PIPELINES}")
    if kind == "auto":
        return "tf_data" if backend.name() == "tensorflow" else "pydataset"
    return kind


def make_input(
    kind: str,
    x,
    y,
    image_size: int,
    preprocess,
    batch_size: int,
    num_outputs: int = 1,
    plan: EpochPlan | None = None,
    epochs: int = 1,
    first_epoch: int = 0,
    workers: int = 1,
):
    """The input stream of ``kind`` (``PIPELINES``); same arguments as ``make_pipeline``, and
    ``workers``: threads preparing NumPy batches ahead (the PyDataset path; tf.data has its own
    parallel map and prefetch)."""
    args = (x, y, image_size, preprocess, batch_size, num_outputs, plan, epochs, first_epoch)
    if resolve(kind) == "tf_data":
        return make_pipeline(*args)
    return ArrayBatches(*args, workers=workers)


def first_images(dataset, n: int) -> np.ndarray:
    """The first ``n`` preprocessed images of either path (what latency measurements feed)."""
    out, have = [], 0
    for xb, _ in dataset if not isinstance(dataset, ArrayBatches) else (dataset[i] for i in range(len(dataset))):
        out.append(np.asarray(keras.ops.convert_to_numpy(xb)))
        have += len(out[-1])
        if have >= n:
            break
    return np.concatenate(out)[:n]
