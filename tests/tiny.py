"""The tiny run every driver, fault, lock, resume and provenance test uses (one definition).

``tiny_cnn`` (the registry's toy backbone: three conv blocks, three exits) at 16x16 on 10 digits
per class: the real experiment notebook, run by the real driver (``python -m elastic_lib.control.batch``,
what ``./run_all.sh`` runs), trains it in about a second; the rest of a run is the kernel's start.
"""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = "tiny_cnn"
TINY = dict(
    dataset="digits",
    image_size=16,
    limit_per_class=10,
    test_limit_per_class=6,
    phase1_epochs=1,
    phase2_epochs=1,
    batch_size=16,
    latency_repeats=0,
    seed=0,
)
RUNS = [f"{BACKBONE}__digits__elastic", f"{BACKBONE}__digits__baseline"]


def write_profile(tmp_path, name, grid=None, overrides=None, defaults=None) -> str:
    """A profile file of the tiny run (``grid`` default: tiny_cnn, elastic and baseline)."""
    path = Path(tmp_path) / f"{name}.yaml"
    spec = {
        "description": "test",
        "defaults": {**TINY, **(defaults or {})},
        "grid": grid or {"backbone": [BACKBONE], "variant": ["elastic", "baseline"]},
    }
    if overrides:
        spec["overrides"] = overrides
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def batch_cmd(profile, root, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "elastic_lib.control.batch",
        "--profile",
        str(profile),
        "--results-root",
        str(Path(root) / "results"),
        "--figures-root",
        str(Path(root) / "figures"),
        *extra,
    ]


def run_batch(profile, root, *extra, wait=True):
    """The driver on ``profile`` with results and figures under ``root``."""
    cmd = batch_cmd(profile, root, *extra)
    if wait:  # the environment (oneDNN, log level) comes from elastic_lib.setup_environment via conftest
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
