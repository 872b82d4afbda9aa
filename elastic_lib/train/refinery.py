"""Label refinery (Bagherinezhad et al. 2018, arXiv:1805.02641): a model is trained on the soft
predictions of a previous run's model instead of the one-hot labels; chaining (A -> B -> C) is a
refinery run that was itself refined. ``refinery_targets`` gives those soft targets for a new
run's training images, after checking that the refinery run saw the same task: dataset, label
mode, classes and image size.
"""

from __future__ import annotations

import os

import numpy as np

from elastic_lib.control.config import ConfigError
from elastic_lib.control.results import is_done, read_params, repo_relative


def check_refinery(refinery_run: str, cfg, num_classes: int | None = None) -> dict:
    """The refinery run's parameters, if it can teach a run of ``cfg`` (same dataset, label mode
    and image size; the number of classes is checked by ``refinery_targets``, which loads the
    run's data); else a ConfigError that says what differs."""
    if not os.path.isdir(refinery_run) or not is_done(refinery_run):
        raise ConfigError(
            f"refinery_run {refinery_run!r} is not a finished run directory (no DONE); give the "
            "run directory of a completed ./run_all.sh run"
        )
    if not os.path.isfile(os.path.join(refinery_run, "model.weights.h5")):
        raise ConfigError(
            f"refinery_run {repo_relative(refinery_run)} has no model.weights.h5 (weights are not "
            "committed): retrain it here first"
        )
    theirs = read_params(refinery_run)
    differ = [
        f"{k}: refinery {theirs.get(k)!r}, this run {getattr(cfg, k)!r}"
        for k in ("dataset", "label_mode", "image_size")
        if theirs.get(k) != getattr(cfg, k)
    ]
    if differ:
        raise ConfigError(f"refinery_run {repo_relative(refinery_run)} does not match this run: {'; '.join(differ)}")
    return theirs


def refinery_targets(
    refinery_run: str,
    teacher,
    cfg,
    images: np.ndarray,
    num_classes: int,
    output: str = "final",
    predict_batch_size: int = 256,
) -> np.ndarray:
    """Soft targets [N, classes] for ``images`` (raw uint8, as the data loader returns them): the
    refinery run's ``output`` (``final`` or ``exitNN``), each model preprocessing as it was trained.
    ``teacher``: that run reloaded (``Experiment.from_run_dir(refinery_run)``), after ``check_refinery``."""
    from elastic_lib.data.pipeline import make_input
    from elastic_lib.models.exits import short_output_names

    check_refinery(refinery_run, cfg, num_classes)
    names = short_output_names(teacher.model)
    if output not in names:
        raise ConfigError(
            f"refinery output {output!r} is not an output of {repo_relative(refinery_run)}; valid: {names}"
        )
    if teacher.splits.num_classes != num_classes:
        raise ConfigError(
            f"refinery_run {repo_relative(refinery_run)} has {teacher.splits.num_classes} classes, "
            f"this run {num_classes}"
        )
    ds = make_input(
        cfg.input_pipeline,
        images,
        np.zeros(len(images), int),
        teacher.cfg.host_image_size(images.shape[1]),
        teacher.preprocess,
        predict_batch_size,
        len(teacher.model.outputs),
    )
    probs = teacher.model.predict(ds, verbose=0)  # predict reads the images and ignores the labels
    probs = probs if isinstance(probs, list) else [probs]
    return np.asarray(probs[names.index(output)], np.float32)
