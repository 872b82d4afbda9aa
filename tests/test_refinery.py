"""Label refinery targets (elastic_lib.train.refinery) from a finished run."""

import numpy as np
import pytest
from tiny import BACKBONE
from tiny import TINY as _TINY

from elastic_lib import experiment
from elastic_lib.control.config import ConfigError, RunConfig
from elastic_lib.train import refinery

pytestmark = [pytest.mark.slow, pytest.mark.backend]  # the teacher is a trained run
TINY = {**_TINY, "backbone": BACKBONE, "limit_per_class": 6, "test_limit_per_class": 3}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("refinery") / "teacher")
    exp = experiment.run({**TINY, "output_dir": out})
    return out, exp


def test_targets_are_the_named_output_of_the_refinery_run(teacher):
    out, exp = teacher
    cfg = RunConfig(**{**TINY, "seed": 3})  # another run of the same task
    images = exp.splits.x_test
    soft = refinery.refinery_targets(out, experiment.Experiment.from_run_dir(out), cfg, images, exp.splits.num_classes)
    probs = exp.model.predict(exp.pipeline("test"), verbose=0)
    np.testing.assert_allclose(soft, probs[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)
    first = refinery.refinery_targets(
        out, experiment.Experiment.from_run_dir(out), cfg, images, exp.splits.num_classes, output="exit01"
    )
    np.testing.assert_allclose(first, probs[0], rtol=1e-5, atol=1e-6)


def test_a_refinery_of_another_task_is_refused(teacher, tmp_path):
    out, exp = teacher
    n = exp.splits.num_classes
    with pytest.raises(ConfigError, match="image_size: refinery 16, this run 64"):
        refinery.check_refinery(out, RunConfig(**{**TINY, "image_size": 64}), n)
    with pytest.raises(ConfigError, match="dataset: refinery 'digits', this run 'cifar10'"):
        refinery.check_refinery(out, RunConfig(**{**TINY, "dataset": "cifar10"}), n)
    with pytest.raises(ConfigError, match="not an output"):
        refinery.refinery_targets(
            out, experiment.Experiment.from_run_dir(out), RunConfig(**TINY), exp.splits.x_test[:2], n, output="exit99"
        )
    with pytest.raises(ConfigError, match="classes"):
        refinery.refinery_targets(
            out, experiment.Experiment.from_run_dir(out), RunConfig(**TINY), exp.splits.x_test[:2], n + 1
        )
    with pytest.raises(ConfigError, match="not a finished run"):
        refinery.check_refinery(str(tmp_path), RunConfig(**TINY), n)


def test_a_chain_of_refinery_runs_trains_on_the_teachers_soft_targets(teacher, tmp_path):
    """teacher -> student (AM-softmax head, margin 0) -> grandstudent: each trains on its
    teacher's final-output probabilities on its own training images, and reports on true labels."""
    out, exp = teacher
    student_dir, grand_dir = str(tmp_path / "student"), str(tmp_path / "grand")
    student = experiment.run({**TINY, "head": "am_softmax", "refinery_run": out, "output_dir": student_dir})
    expected = exp.model.predict(exp.pipeline("train"), verbose=0)[-1]
    np.testing.assert_allclose(student.refinery_targets, expected, rtol=1e-5, atol=1e-6)
    y = np.concatenate([yb[0] for _, yb in student.pipeline("test")])
    assert (y.argmax(1) == student.splits.y_test).all() and (student.exits["n"] == len(student.splits.y_test)).all()
    grand = experiment.run({**TINY, "refinery_run": student_dir, "output_dir": grand_dir})
    targets = student.model.predict(student.pipeline("train"), verbose=0)[-1]
    np.testing.assert_allclose(grand.refinery_targets, targets, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="AM margin is undefined"):
        RunConfig(**{**TINY, "head": "am_softmax", "am_margin": 0.1, "refinery_run": out}).validate()
