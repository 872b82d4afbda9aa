"""What made a run, and whether it is still what the code would make now.

A finished run records in its ``params.yaml`` a *fingerprint*: the code of every unit (function,
class, method, constant, module statements) of the ``elastic_lib`` modules its kernel had imported,
hashed by what it does (``elastic_lib.control.codehash``: comments, docstrings, formatting and where a unit
lives or what it is called do not count), the code cells of the notebook that ran it (likewise), its
resolved parameters (plumbing such as paths left out), its Keras backend and its data (the CIFAR
archive, or scikit-learn's digits file). A run directory is then

- ``todo``: no ``DONE`` marker;
- ``done``: ``DONE``, and every recorded part is still there: each unit's code somewhere in the
  library (wherever it lives now), the same notebook code, parameters, backend and data;
- ``stale``: ``DONE``, but some part changed since (or it has no fingerprint): ``--rerun-stale`` redoes
  it, and ``--list`` names what changed (e.g. ``code: elastic_lib.train.training:compile_model``).

``codehash`` and this module compute the fingerprint and are left out of it. The data part is
compared only where the data can be found without downloading (the run's recorded ``data_dir``,
``$ELASTIC_DATA_DIR``, the Keras cache); elsewhere it is reported as unchecked.

Runs recorded before version 2 (SHA-256 of each file's bytes) are compared byte for byte until
``python -m elastic_lib.control.provenance upgrade`` moves them to version 2 without retraining: it checks
that their byte hashes match the files of the commit that made them and hashes that commit's code.
Light: no TensorFlow import (the driver's ``--list`` uses it).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys

from elastic_lib.control import backend, codehash, datasets, results
from elastic_lib.control.config import RunConfig, as_recorded
from elastic_lib.control.paths import EXPERIMENT_NOTEBOOK, ROOT

LIB = os.path.join(ROOT, "elastic_lib")
NOTEBOOK = os.path.join(ROOT, EXPERIMENT_NOTEBOOK)
PARTS = ("code", "notebook", "parameters", "data")
VERSION = 2
NOT_RECORDED = ("control.codehash", "control.provenance")  # they make the fingerprint; their tests guard them
# What a run writes about its machine and versions: named, not hashed (a run on another machine or a
# new machine description stays current).
OPAQUE = (
    *NOT_RECORDED,
    "control.environment:machine_info",
    "control.environment:machine_label",
    "control.environment:ISA_LADDER",
    "control.environment:ISA_NAMES",
    "control.environment:VECTOR_FLAGS",
    "control.environment:environment_info",
    "control.environment:record",
    "runtime:backend_details",
)
_data_cache: dict[tuple, str] = {}
_code_cache: dict[tuple, dict] = {}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def module_hash(name: str) -> str | None:
    """SHA-256 of ``elastic_lib/<name>.py``'s bytes in the working tree (None if it no longer exists):
    the library part of a version-1 fingerprint."""
    path = os.path.join(LIB, *name.split(".")) + ".py"
    if not os.path.isfile(path):
        path = os.path.join(LIB, *name.split("."), "__init__.py")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return _sha(f.read())


def loaded_modules() -> list[str]:
    """The ``elastic_lib`` modules this process has imported (names relative to the package)."""
    return sorted(
        m[len("elastic_lib.") :] if m != "elastic_lib" else "__init__"
        for m in list(sys.modules)
        if m == "elastic_lib" or m.startswith("elastic_lib.")
    )


def _code_cells(text: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code"]


def notebook_hash(path: str | None = None, text: str | None = None) -> str:
    """SHA-256 of the notebook's code cells by what they do (outputs, metadata, comments and formatting
    do not make a run). ``text``: the notebook's JSON instead of reading ``path``."""
    if text is None:
        with open(path or NOTEBOOK) as f:
            text = f.read()
    return _sha(codehash.notebook_text(_code_cells(text)).encode())


def notebook_hash_v1(text: str) -> str:
    """A version-1 fingerprint's notebook part: the code cells' text as written."""
    return _sha("\n# ----- cell\n".join(_code_cells(text)).encode())


def library_hashes(lib: str | None = None) -> dict[str, tuple[str, str]]:
    """Every unit of the library in ``lib`` (default: this checkout's) and its hashes; cached while
    no file changes."""
    lib = lib or LIB
    stats = []
    for folder, dirs, files in os.walk(lib):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        stats += [
            (
                os.path.join(folder, f),
                os.stat(os.path.join(folder, f)).st_mtime_ns,
                os.stat(os.path.join(folder, f)).st_size,
            )
            for f in files
            if f.endswith(".py")
        ]
    key = (lib, tuple(sorted(stats)))
    if key not in _code_cache:
        _code_cache.clear()
        _code_cache[key] = codehash.package_hashes(codehash.read_package(lib), OPAQUE)
    return _code_cache[key]


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
    data_dir = os.path.expanduser(data_dir) if data_dir else ""
    if data_dir and not os.path.isdir(data_dir):
        return None
    try:
        return datasets.locate_cifar(dataset, data_dir or None)
    except datasets.DatasetError:
        return None


def portable_path(path: str) -> str:
    """``path`` as recorded: relative to the repo root when it is beside it, ``~/...`` under the
    home folder, else absolute (never this machine's layout for data beside the repo)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(ROOT)
    if path.startswith(parent + os.sep):
        return os.path.relpath(path, ROOT)
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


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


def _notebook_module(text: str) -> str:
    """The notebook's code cells as one module (cells that are not plain Python, magics, left out)."""
    cells = []
    for src in _code_cells(text):
        try:
            ast.parse(src)
        except SyntaxError:
            continue
        cells.append(src)
    return "\n".join(cells)


def run_code(sources: dict[str, str], notebook_text: str, modules) -> dict:
    """The code part of a fingerprint: every unit the notebook's code and the import of ``modules``
    can reach within ``modules`` (codehash.run_units), hashed."""
    hashes = codehash.package_hashes({**sources, codehash.NOTEBOOK_MODULE: _notebook_module(notebook_text)}, OPAQUE)
    return codehash.run_units(hashes, [m for m in modules if m not in NOT_RECORDED])


def code_hashes(modules: list[str] | None = None, notebook: str | None = None) -> dict:
    """Code and notebook part of a fingerprint, as the files are now: what the notebook can reach
    in ``modules`` (default: the library modules this process imported)."""
    names = loaded_modules() if modules is None else modules
    with open(notebook or NOTEBOOK) as f:
        text = f.read()
    return {"code": run_code(codehash.read_package(LIB), text, names), "notebook": notebook_hash(text=text)}


def fingerprint(cfg: RunConfig, code: dict | None = None) -> dict:
    """The fingerprint of a run of ``cfg``: ``code`` as hashed when the run started (modules first
    imported later are hashed now), its parameters and its data (the path it was read from and its hash)."""
    now = code_hashes()
    code = code or now
    src = data_source(cfg.dataset, cfg.data_dir)
    return {
        "version": VERSION,
        "code": {**now["code"], **code["code"]},
        "notebook": code["notebook"],
        "parameters": parameters_hash(cfg.experiment_params()),
        "data": None if src is None else hash_path(src),
        "data_source": None if src is None or cfg.dataset == "digits" else portable_path(src),
        "backend": backend.name(),
    }


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
    if rec.get("version", 1) >= 2:
        units = codehash.changed(rec["code"], library_hashes())
        if units:
            out.append("code: " + ", ".join(f"elastic_lib.{u}" for u in units))
        nb_now = notebook_hash()
    else:  # version 1: each imported file's bytes, the notebook's code cells as written
        lib = [m for m, h in sorted(rec["library"].items()) if module_hash(m) != h]
        if lib:
            out.append("library: " + ", ".join(f"elastic_lib/{m.replace('.', '/')}.py" for m in lib))
        with open(NOTEBOOK) as f:
            nb_now = notebook_hash_v1(f.read())
    if nb_now != rec["notebook"]:
        out.append(f"notebook: {EXPERIMENT_NOTEBOOK}")
    made_on = rec.get("backend", "tensorflow")  # runs made before backends were recorded: TensorFlow
    if made_on != backend.name():
        out.append(f"backend: made on {made_on}, this session runs Keras on {backend.name()}")
    then = doc.get("parameters", {})
    now = then if cfg is None else as_recorded(cfg.experiment_params(), then)  # parameters added since
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


# ---------------------------------------------------------------- version 1 -> 2
def _git_show(commit: str, rel: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def _package_at(commit: str) -> dict[str, str]:
    proc = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", commit, "elastic_lib/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        codehash.module_name(os.path.relpath(p, "elastic_lib")): _git_show(commit, p)
        for p in proc.stdout.split()
        if p.endswith(".py")
    }


def upgrade(run_dir: str) -> str:
    """Move a version-1 fingerprint to version 2 without retraining: the code and notebook of the
    commit that made the run (``environment.git_commit``) are hashed, after checking that the run's
    recorded byte hashes are those of that commit's files. Returns what was done; raises
    ``ValueError`` when the run cannot be matched to its commit (then it must be rerun)."""
    import yaml

    doc = results.read_params_yaml(run_dir)
    rec = doc.get("fingerprint") or {}
    if rec.get("version", 1) >= 2:
        return "already version 2"
    if not rec.get("library"):
        raise ValueError(f"{run_dir}: no fingerprint to upgrade; rerun it")
    commit = (doc.get("environment") or {}).get("git_commit", "")
    if not commit or commit == "unknown" or _git_show(commit, "elastic_lib/__init__.py") is None:
        raise ValueError(f"{run_dir}: its commit {commit or '(none)'} is not in this repository; rerun it")
    mismatched = [
        m
        for m, h in sorted(rec["library"].items())
        if _sha((_git_show(commit, f"elastic_lib/{m.replace('.', '/')}.py") or "").encode()) != h
    ]
    nb = _git_show(commit, EXPERIMENT_NOTEBOOK)
    if nb is None or notebook_hash_v1(nb) != rec["notebook"]:
        mismatched.append(EXPERIMENT_NOTEBOOK)
    if mismatched:
        raise ValueError(f"{run_dir}: made by other code than commit {commit[:7]} ({', '.join(mismatched)}); rerun it")
    new = {
        "version": VERSION,
        "code": run_code(_package_at(commit), nb, rec["library"]),
        "notebook": notebook_hash(text=nb),
        "upgraded_from": f"version 1 checked against {commit}",
        **{k: v for k, v in rec.items() if k not in ("library", "notebook")},
    }
    doc["fingerprint"] = new
    results.atomic_write_text(os.path.join(run_dir, "params.yaml"), yaml.safe_dump(doc, sort_keys=True))
    return f"upgraded (code of {commit[:7]})"


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m elastic_lib.control.provenance",
        description="Fingerprints of committed runs: upgrade version-1 ones.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upgrade", help="move runs' version-1 fingerprints to version 2 (no retraining)")
    up.add_argument("run_dirs", nargs="+", help="run directories (with DONE)")
    args = ap.parse_args(argv)
    failed = 0
    for d in args.run_dirs:
        if not results.is_done(d):
            continue
        try:
            print(f"{d}: {upgrade(d)}")
        except ValueError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
