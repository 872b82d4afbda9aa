"""The notebooks' ``parameters`` cells, generated from the dataclasses that define them.

A notebook that papermill runs declares its parameters in one cell tagged ``parameters``. That cell
is generated from a dataclass (the experiment's from ``RunConfig``), so a parameter, its type,
its default and its meaning are written once; a test fails when a cell and its dataclass differ::

    python -m elastic_lib.control.notebook_cells            # check every template (exit 1 if stale)
    python -m elastic_lib.control.notebook_cells --write    # regenerate the cells
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing

from elastic_lib.control.config import AggregateConfig, ConfigError, PruningConfig, RunConfig
from elastic_lib.control.paths import AGGREGATE_NOTEBOOK, EXPERIMENT_NOTEBOOK, PRUNING_NOTEBOOK, ROOT

# ---------------------------------------------------------------- the notebooks' parameters cells
SCHEMAS = {EXPERIMENT_NOTEBOOK: RunConfig, AGGREGATE_NOTEBOOK: AggregateConfig, PRUNING_NOTEBOOK: PruningConfig}


def _type_name(schema, f) -> str:
    return typing.get_type_hints(schema)[f.name].__name__


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def parameters_cell_source(schema=RunConfig) -> str:
    """A notebook's ``parameters`` cell, generated from its dataclass (the experiment's: RunConfig)."""
    lines = [
        f"# Parameters (generated from {schema.__module__}.{schema.__name__} by "
        "`python -m elastic_lib.control.notebook_cells --write`; edit the dataclass, not this cell).",
        "# papermill overrides any of these (-p name value); run_all.sh passes a profile's values.",
    ]
    for f in dataclasses.fields(schema):
        value = _default(f)
        value = json.dumps(value) if isinstance(value, (str, list)) else repr(value)
        lines.append(f"{f.name}: {_type_name(schema, f)} = {value}  # {f.metadata['doc']}")
    return "\n".join(lines)


def _parameters_cell(nb: dict, path: str) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def notebook_parameters_source(path: str = EXPERIMENT_NOTEBOOK) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return "".join(_parameters_cell(json.load(f), path)["source"])


def write_notebook_parameters(path: str = EXPERIMENT_NOTEBOOK) -> bool:
    """Rewrite a template's parameters cell from its dataclass; True if it changed."""
    full = os.path.join(ROOT, path)
    with open(full) as f:
        nb = json.load(f)
    cell = _parameters_cell(nb, path)
    new = parameters_cell_source(SCHEMAS[path])
    if "".join(cell["source"]) == new:
        return False
    cell["source"] = new.splitlines(keepends=True)
    with open(full, "w") as f:
        f.write(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def stale_notebooks() -> list[str]:
    """The templates whose parameters cell differs from their dataclass."""
    return [
        path for path, schema in SCHEMAS.items() if notebook_parameters_source(path) != parameters_cell_source(schema)
    ]


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m elastic_lib.control.notebook_cells",
        description="the template notebooks' parameters cells, from their dataclasses",
    )
    ap.add_argument("--write", action="store_true", help="regenerate the cells")
    ap.add_argument("--print", metavar="NOTEBOOK", help="print the cell a template should have")
    a = ap.parse_args(argv)
    if a.print:
        print(parameters_cell_source(SCHEMAS[a.print]))
        return 0
    if a.write:
        for path in SCHEMAS:
            print("rewrote" if write_notebook_parameters(path) else "unchanged", path)
        return 0
    stale = stale_notebooks()
    for path in stale:
        print(
            f"{path}: parameters cell differs from {SCHEMAS[path].__name__}; run "
            "python -m elastic_lib.control.notebook_cells --write",
            file=sys.stderr,
        )
    return 1 if stale else 0


def declared_parameters(notebook: str) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(notebook))


def check_parameters(notebook: str, params: dict) -> None:
    """Papermill only warns about parameters the notebook does not declare; we refuse them."""
    unknown = sorted(set(params) - declared_parameters(notebook))
    if unknown:
        raise ConfigError(
            f"parameter(s) {unknown} are not declared in the parameters cell of "
            f"{os.path.relpath(notebook, ROOT)}; declared: {sorted(declared_parameters(notebook))}"
        )


if __name__ == "__main__":
    sys.exit(main())
