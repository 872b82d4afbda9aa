"""The house rules of elastic_lib (docs/architecture.md), enforced here rather than by convention:
the layers (import-linter contracts in pyproject.toml), no import circle, no side effect on import,
Keras' private API in one file, defaults and paths written once, every environment variable
documented, and the code formatted and linted by ruff."""

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from elastic_lib.control.config import AggregateConfig, PruningConfig, RunConfig

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "elastic_lib"
PRIVATE_KERAS = {"_keras_history", "_inbound_nodes", "_run_through_graph", "_initial_epoch"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def test_import_linter_contracts_are_kept():
    """control never imports Keras or a backend; no module imports from a layer above its own."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_package_has_a_layer():
    """The layers contract names every top-level package and module of elastic_lib (import-linter
    leaves out what it is not told about)."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    top = {
        f"elastic_lib.{p.stem if p.is_file() else p.name}"
        for p in LIB.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert top == named, f"not layered: {sorted(top - named)}; layered but absent: {sorted(named - top)}"


def test_no_import_circle():
    """No module reaches itself through imports (function-level imports included)."""
    graph = grimp.build_graph("elastic_lib")
    modules = sorted(graph.modules)
    circles = []
    for m in modules:
        for other in graph.find_modules_directly_imported_by(m) - {m}:
            if graph.chain_exists(importer=other, imported=m):
                circles.append((m, other))
    assert not circles, f"import circles: {circles}"


def test_import_has_no_side_effects():
    """``import elastic_lib`` (and the control plane) sets no environment variable and imports no
    Keras or backend; ``setup_environment()`` is the explicit call that does."""
    code = (
        "import os, sys\nbefore = dict(os.environ)\n"
        "import elastic_lib, elastic_lib.control.batch, elastic_lib.control.profiles\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "assert not changed and not heavy, (changed, heavy)\n"
        "elastic_lib.setup_environment()\n"
        "assert os.environ['KERAS_BACKEND'] and os.environ['TF_CPP_MIN_LOG_LEVEL'] == '2'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_private_keras_api_only_in_keras_compat():
    offenders = []
    for name, tree in _modules().items():
        if name == "elastic_lib.models.keras_compat":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_KERAS:
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Constant) and node.value in PRIVATE_KERAS:
                offenders.append(f"{name}:{node.lineno} {node.value!r}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{name}:{node.lineno} import {m}" for m in mods if m.startswith("keras.src")]
    assert not offenders, offenders


def test_root_and_template_paths_are_written_once():
    """Only elastic_lib.control.paths says where the repository and the template notebooks are."""
    offenders = []
    for name, tree in _modules().items():
        if name == "elastic_lib.control.paths":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ROOT" for t in node.targets):
                offenders.append(f"{name}:{node.lineno} ROOT =")
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.search(r"(elastic_experiment|aggregate|channel_pruning)\.ipynb$", node.value)
                and "/" in node.value
            ):
                offenders.append(f"{name}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


def _schema_fields() -> set[str]:
    return {f.name for schema in (RunConfig, AggregateConfig, PruningConfig) for f in dataclasses.fields(schema)}


def test_run_parameters_have_their_defaults_written_once():
    """A library function's parameter named like a run or notebook parameter takes its default from
    the dataclass (``config.default(name)``), never a literal copy of it."""
    fields, offenders = _schema_fields(), []
    plumbing = {"profile", "results_root", "tables_dir", "figures_dir", "output_dir", "data_dir", "weights"}
    # the same name, another meaning: a builder's architecture defaults (as keras.applications' have),
    # a bootstrap's own random seed, the channel-pruning algorithm's own arguments
    exempt = {
        "elastic_lib.models.builders.inception_v4",
        "elastic_lib.analysis.stats",
        "elastic_lib.studies.pruning.channels",
    }
    for name, tree in _modules().items():
        if name.startswith("elastic_lib.control."):
            continue
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            args = fn.args.posonlyargs + fn.args.args
            pairs = list(zip(args[len(args) - len(fn.args.defaults) :], fn.args.defaults))
            pairs += [(a, d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None]
            for arg, dflt in pairs:
                if (
                    arg.arg in fields
                    and arg.arg not in plumbing
                    and isinstance(dflt, ast.Constant)
                    and dflt.value is not None
                    and name not in exempt
                ):
                    offenders.append(f"{name}:{fn.name}({arg.arg}={dflt.value!r})")
    assert not offenders, offenders


def test_every_environment_variable_is_documented():
    """Every ELASTIC_* variable the code, the scripts or the notebooks read has a row in
    docs/environment-variables.md."""
    doc = (ROOT / "docs" / "environment-variables.md").read_text()
    used = set()
    for pattern in (
        "elastic_lib/**/*.py",
        "scripts/*",
        "*.sh",
        "slurm/*",
        "notebooks/*.ipynb",
        "tests/*.py",
        "benchmarks/*.py",
        ".ci/run",
    ):
        for path in ROOT.glob(pattern):
            if path.is_file():
                used |= set(re.findall(r"\bELASTIC_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="ignore")))
    missing = sorted(v for v in used if f"`{v}`" not in doc)
    assert not missing, f"add to docs/environment-variables.md: {missing}"


RUFF_PATHS = ["elastic_lib", "tests", "benchmarks", "scripts", "conftest.py", "jupyter_config"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    """ruff (configured in pyproject.toml) over the library, tests, benchmarks and scripts."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *RUFF_PATHS], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
