"""Where things are: the repository root and its folders, and the template notebooks. The one place
that writes these paths; everything else imports them."""

from __future__ import annotations

import os

INTERACTIVE_ENV = "ELASTIC_INTERACTIVE_DIR"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
EXPERIMENTS = os.path.join(ROOT, "experiments")
RESULTS = os.path.join(ROOT, "results")
FIGURES = os.path.join(ROOT, "figures")

EXPERIMENT_NOTEBOOK = "notebooks/elastic_experiment.ipynb"  # one run (papermill parameters: RunConfig)
AGGREGATE_NOTEBOOK = "notebooks/aggregate.ipynb"  # a profile's tables and figures (AggregateConfig)
PRUNING_NOTEBOOK = "notebooks/channel_pruning.ipynb"  # the VGG16 channel-pruning study (PruningConfig)
TEMPLATES = (EXPERIMENT_NOTEBOOK, AGGREGATE_NOTEBOOK)  # nbval's, with stored outputs
STUDY_TEMPLATES = (PRUNING_NOTEBOOK,)  # run by the driver after a profile; no stored outputs
PERSONAL_DIR = "notebooks/personal"


def repo_path(rel: str) -> str:
    """The absolute path of a repository-relative path."""
    return os.path.join(ROOT, rel)


def study_notebook(name: str) -> str:
    """The template notebook of a study named in a profile (``study: {notebook: name}``)."""
    return os.path.join(NOTEBOOKS, f"{name}.ipynb")


def interactive_dir() -> str:
    """Where runs and aggregations started by hand (JupyterLab, a script) write when no output
    folder is given: ``$ELASTIC_INTERACTIVE_DIR``, else ``results/interactive`` (git-ignored).
    The test session points it at a temporary folder, so nbval never touches a user's runs."""
    return os.path.abspath(os.environ.get(INTERACTIVE_ENV) or os.path.join(ROOT, "results", "interactive"))


def display_path(path: str) -> str:
    """A path as the notebooks print it: inside ``$ELASTIC_INTERACTIVE_DIR`` relative to it,
    inside the repo relative to the repo, else as it is (never the machine's repo path)."""
    path = os.path.abspath(path)
    if os.environ.get(INTERACTIVE_ENV):
        rel = os.path.relpath(path, interactive_dir())
        if not rel.startswith(".."):
            return os.path.join(f"${INTERACTIVE_ENV}", rel) if rel != "." else f"${INTERACTIVE_ENV}"
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel
