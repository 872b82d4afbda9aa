"""Session-wide test settings. At the repo root, so `pytest --nbval notebooks/` gets them too.

- Tiers (``./run_tests.sh``, docs/testing.md): ``--quick`` runs what trains nothing (tests marked
  ``slow`` and the experiment notebook's nbval are deselected; a test that calls ``fit`` anyway
  fails, naming the marker to add); the default runs everything but ``deep``; ``--deep`` adds the
  ``deep`` tests (long real training: many kill trials, the whole smoke profile under ISA caps).

- Interactive outputs (runs and aggregations started without an output folder, i.e. what the
  template notebooks write under nbval) go to a temporary ``$ELASTIC_INTERACTIVE_DIR``, never to
  the user's ``results/interactive/`` nor to tracked files.
- The session must leave ``git status`` as it found it: a test run that changed, created or
  deleted a tracked or unignored file fails, naming the files.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))


def _git_status() -> str | None:
    try:
        proc = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def pytest_addoption(parser):
    group = parser.getgroup("elastic", "test tiers (docs/testing.md)")
    group.addoption(
        "--quick", action="store_true", help="only tests that train nothing (not `slow`, no experiment notebook)"
    )
    group.addoption("--deep", action="store_true", help="also the `deep` tests (long real training)")


def pytest_configure(config):
    config._elastic_interactive = tempfile.mkdtemp(prefix="elastic-interactive-")
    os.environ["ELASTIC_INTERACTIVE_DIR"] = config._elastic_interactive
    config._elastic_git_before = _git_status()


def pytest_collection_modifyitems(config, items):
    """Tiers: ``deep`` tests skip without ``--deep``; ``--quick`` deselects what trains (``slow``
    tests, the nbval cells of the experiment notebook). ``requires_tensorflow`` tests (tf.data,
    tf.GradientTape, SavedModel, TFLite, tf.distribute) skip when the session runs on another Keras
    backend (``./run_tests.sh`` runs the backend-dependent tests on JAX too)."""
    for item in items:
        if "elastic_experiment.ipynb" in item.nodeid:  # nbval runs the template: it trains
            item.add_marker(pytest.mark.slow)
        if "mobilenet_elastic" in getattr(item, "fixturenames", ()):  # a session fixture: fits 2 epochs
            item.add_marker(pytest.mark.slow)
    if config.getoption("--quick"):
        keep = [i for i in items if "slow" not in i.keywords and "deep" not in i.keywords]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    elif not config.getoption("--deep"):
        skip = pytest.mark.skip(reason="deep tier: ./run_tests.sh --deep (docs/testing.md)")
        for item in items:
            if "deep" in item.keywords:
                item.add_marker(skip)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this session runs Keras on {backend}")
    for item in items:
        if "requires_tensorflow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _quick_tier_trains_nothing(request, monkeypatch):
    """Under ``--quick`` a test that calls ``keras.Model.fit`` fails: it must be marked ``slow``."""
    if not request.config.getoption("--quick"):
        yield
        return
    import keras

    def refuse(*args, **kwargs):
        raise AssertionError(
            f"{request.node.nodeid} trains a model: mark it @pytest.mark.slow (the quick tier trains nothing)"
        )

    monkeypatch.setattr(keras.Model, "fit", refuse)
    yield


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_elastic_git_before", None)
    after = _git_status()
    if before is None or after is None or after == before:
        return
    changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
    session.config.get_terminal_writer().line(
        "tests changed the working tree (git status differs before/after the session):\n  " + "\n  ".join(changed),
        red=True,
    )
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_elastic_interactive", ""), ignore_errors=True)
