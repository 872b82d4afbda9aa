"""elastic_lib: Elastic Neural Networks (Zhou et al., arXiv:1810.00589) on Keras 3.

Importing the package does nothing to the process: no environment variable is set and no Keras,
TensorFlow or backend is imported. Call ``setup_environment()`` first (before Keras is imported) to
get quiet logs and the Keras backend from ``ELASTIC_BACKEND``; the notebooks, the batch driver and
the tests do. The model-building names below load Keras on first use.

Packages, bottom to top (docs/architecture.md): ``control`` (configs, profiles, the registry, the
driver, results, provenance; never imports Keras), ``models`` and ``data`` (with ``runtime``),
``train``, ``early_exit`` and ``analysis``, then ``experiment`` (the notebook's steps) and ``studies``.
"""

from elastic_lib.control.environment import setup_environment

__version__ = "0.1.0"
__all__ = ["build_elastic_model", "exit_taps", "get_backbone", "list_backbones", "setup_environment"]


def __getattr__(name):
    if name in ("build_elastic_model", "exit_taps"):
        from elastic_lib.models import exits

        return getattr(exits, name)
    if name in ("get_backbone", "list_backbones"):
        from elastic_lib.control import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'elastic_lib' has no attribute {name!r}")
