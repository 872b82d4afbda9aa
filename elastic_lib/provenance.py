"""What made a run, and whether it is still what the code would make now.

A finished run records in its ``params.yaml`` a *fingerprint*: the SHA-256 of the source of every
``elastic_lib`` module its kernel had imported, of the code cells of the notebook that ran it, of its
resolved parameters (plumbing such as paths left out) and of its data (the CIFAR archive, or
scikit-learn's digits file). A run directory is then

- ``todo``: no ``DONE`` marker;
- ``done``: ``DONE``, and every recorded part matches the working tree;
- ``stale``: ``DONE``, but some part changed since (or it has no fingerprint): ``--rerun-stale`` redoes it.

The data part is compared only where the data can be found without downloading (the run's recorded
``data_dir``, ``$ELASTIC_DATA_DIR``, the Keras cache); elsewhere it is reported as unchecked.
Light: no TensorFlow import (the driver's ``--list`` uses it).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys

from . import backend, results
from .config import NOTEBOOK, ROOT, RunConfig

LIB = os.path.join(ROOT, "elastic_lib")
PARTS = ("library", "notebook", "parameters", "data")
_data_cache: dict[tuple, str] = {}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def module_hash(name: str) -> str | None:
    """SHA-256 of ``elastic_lib/<name>.py`` in the working tree (None if it no longer exists)."""
    path = os.path.join(LIB, *name.split(".")) + ".py"
    if not os.path.isfile(path):
        path = os.path.join(LIB, *name.split("."), "__init__.py")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return _sha(f.read())


def loaded_modules() -> list[str]:
    """The ``elastic_lib`` modules this process has imported (names relative to the package)."""
    return sorted(m[len("elastic_lib."):] if m != "elastic_lib" else "__init__"
                  for m in list(sys.modules) if m == "elastic_lib" or m.startswith("elastic_lib."))


def notebook_hash(path: str | None = None) -> str:
    """SHA-256 of the notebook's code cells (sources only: outputs and metadata do not make a run)."""
    with open(path or NOTEBOOK) as f:
        nb = json.load(f)
    code = "\n# ----- cell\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return _sha(code.encode())


def parameters_hash(params: dict) -> str:
    """SHA-256 of the resolved experiment parameters (``RunConfig.experiment_params()``)."""
    return _sha(json.dumps(params, sort_keys=True, default=str).encode())


def data_source(dataset: str, data_dir: str = "") -> str | None:
    """The file or folder a run's data comes from, found the way the loader finds it (``data_dir``
    relative to the current folder, ``~`` expanded; $ELASTIC_DATA_DIR; the Keras cache), without
    downloading; None if it is not here."""
    if dataset == "digits":
        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
        return path if os.path.isfile(path) else None
    from . import data

    data_dir = os.path.expanduser(data_dir) if data_dir else ""
    if data_dir and not os.path.isdir(data_dir):
        return None
    try:
        return data.locate_cifar(dataset, data_dir or None, download=False)
    except data.DatasetError:
        return None


def portable_path(path: str) -> str:
    """``path`` as recorded: relative to the repo root when it is beside it, ``~/...`` under the
    home folder, else absolute (never this machine's layout for data beside the repo)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(ROOT)
    if path.startswith(parent + os.sep):
        return os.path.relpath(path, ROOT)
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def _resolve(recorded: str) -> str:
    path = os.path.expanduser(recorded)
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def hash_path(src: str) -> str:
    """SHA-256 of a file (of every file, with its relative name, in name order, for a folder)."""
    files = [src] if os.path.isfile(src) else sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
    key = tuple((p, os.path.getsize(p), os.path.getmtime(p)) for p in files)
    if key not in _data_cache:
        h = hashlib.sha256()
        for p in files:
            if p != src:  # a folder: its file names count too
                h.update(os.path.relpath(p, src).encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        _data_cache[key] = h.hexdigest()
    return _data_cache[key]


def data_hash(dataset: str, data_dir: str = "") -> str | None:
    """SHA-256 of the data the loader would read; None if it is not found here."""
    src = data_source(dataset, data_dir)
    return None if src is None else hash_path(src)


def code_hashes(modules: list[str] | None = None, notebook: str | None = None) -> dict:
    """Library and notebook part of a fingerprint, as the files are now."""
    names = loaded_modules() if modules is None else modules
    return {"library": {m: module_hash(m) for m in names}, "notebook": notebook_hash(notebook)}


def fingerprint(cfg: RunConfig, code: dict | None = None) -> dict:
    """The fingerprint of a run of ``cfg``: ``code`` as hashed when the run started (modules first
    imported later are hashed now), its parameters and its data (the path it was read from and its hash)."""
    now = code_hashes()
    code = code or now
    src = data_source(cfg.dataset, cfg.data_dir)
    return {"library": {**now["library"], **code["library"]}, "notebook": code["notebook"],
            "parameters": parameters_hash(cfg.experiment_params()),
            "data": None if src is None else hash_path(src),
            "data_source": None if src is None or cfg.dataset == "digits" else portable_path(src),
            "backend": backend.name()}


def record(run_dir: str, cfg: RunConfig, code: dict | None = None) -> dict:
    """Add the fingerprint of the run just made to its params.yaml (called by Experiment.finish
    with the code hashes taken in setup(), so a file edited during the run makes it stale)."""
    import yaml

    doc = results.read_params_yaml(run_dir)
    doc["fingerprint"] = fingerprint(cfg, code)
    results.atomic_write_text(os.path.join(run_dir, "params.yaml"), yaml.safe_dump(doc, sort_keys=True))
    return doc["fingerprint"]


def _recorded(run_dir: str) -> tuple[dict, dict]:
    """(params.yaml, its parameters and plumbing in one dict); a DONE run without params.yaml is
    reported by ``changes``."""
    doc = results.read_params_yaml(run_dir)
    return doc, {**doc.get("parameters", {}), **(doc.get("plumbing") or {})}


def current_data_hash(rec: dict, recorded: dict, data_dir: str | None = None) -> str | None:
    """The hash of the run's data as it is here now: ``data_dir`` if given, else the path the run
    recorded, else where the loader would look; None if not found (unchecked)."""
    dataset = recorded.get("dataset", "")
    if data_dir is None and rec.get("data_source"):
        src = _resolve(rec["data_source"])
        return hash_path(src) if os.path.exists(src) else None
    if data_dir is None:
        data_dir = recorded.get("data_dir", "") or ""
        data_dir = _resolve(data_dir) if data_dir else ""
    return data_hash(dataset, data_dir)


def changes(run_dir: str, cfg: RunConfig | None = None, data_dir: str | None = None) -> list[str]:
    """What differs between the finished run in ``run_dir`` and what would make it now (empty:
    nothing). ``cfg``: the run as its profile defines it now (default: its own recorded parameters,
    so only code and data are compared); ``data_dir``: where to look for its data (default: the
    path the run recorded)."""
    try:
        doc, recorded = _recorded(run_dir)
    except FileNotFoundError:
        return ["no params.yaml"]
    rec = doc.get("fingerprint")
    if not rec:
        return ["no fingerprint (made before fingerprints were recorded)"]
    out = []
    lib = [m for m, h in sorted(rec["library"].items()) if module_hash(m) != h]
    if lib:
        out.append("library: " + ", ".join(f"elastic_lib/{m.replace('.', '/')}.py" for m in lib))
    if notebook_hash() != rec["notebook"]:
        out.append("notebook: notebooks/elastic_experiment.ipynb")
    made_on = rec.get("backend", "tensorflow")  # runs made before backends were recorded: TensorFlow
    if made_on != backend.name():
        out.append(f"backend: made on {made_on}, this session runs Keras on {backend.name()}")
    then = doc.get("parameters", {})
    now = then if cfg is None else cfg.experiment_params()
    if parameters_hash(now) != rec["parameters"]:
        diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        out.append("parameters: " + (", ".join(diff) or "resolved values"))
    if rec.get("data") is not None:
        current = current_data_hash(rec, recorded, data_dir)
        if current is not None and current != rec["data"]:
            out.append("data: the dataset's files differ")
    return out


def status(run_dir: str, cfg: RunConfig | None = None, data_dir: str | None = None) -> tuple[str, list[str]]:
    """('todo' | 'done' | 'stale', what changed) for a run directory."""
    if not results.is_done(run_dir):
        return "todo", []
    why = changes(run_dir, cfg, data_dir)
    return ("stale" if why else "done"), why


def data_checked(run_dir: str, data_dir: str | None = None) -> bool:
    """Whether ``status`` could compare the run's data (it recorded a hash and the data is here)."""
    try:
        doc, recorded = _recorded(run_dir)
    except FileNotFoundError:
        return False
    rec = doc.get("fingerprint") or {}
    return rec.get("data") is not None and current_data_hash(rec, recorded, data_dir) is not None
