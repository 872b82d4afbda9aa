"""Profiles: a named grid of runs (``experiments/<name>.yaml``), expanded into checked RunConfigs.

A profile is a grid of runs::

    description: ...
    base: paper                                             # optional: start from another profile
    defaults: {dataset: digits, image_size: 32, ...}       # any RunConfig field
    grid: {backbone: [...], dataset: [...], variant: [elastic, baseline], seed: [0]}
    overrides: {resnet50: {learning_rate: 0.05}}            # per backbone (or per run id)
    cases: {name: {field: value}}                           # named variants, one run each
    study: {notebook: name, parameters: {...}}              # a study notebook run after the runs

With ``base``, the base profile's defaults, grid and overrides come first and this file's entries
replace theirs key by key (``paper-dryrun`` is ``paper`` at a small scale). Every key and type is
checked once, up front, with errors that name the bad value and the valid ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field

import yaml

from elastic_lib.control.config import ConfigError, RunConfig
from elastic_lib.control.paths import ROOT

PROFILE_KEYS = {"description", "base", "requires_gpu", "defaults", "grid", "overrides", "study", "cases"}


STUDY_KEYS = {"notebook", "parameters"}  # a study notebook run once after the profile's runs


GRID_KEYS = {
    "backbone",
    "dataset",
    "variant",
    "seed",
    "label_mode",
    "image_size",
    "loss_weights",
    "exits",
    "head",
    "bn_epsilon",
    "count_include_pad",
    "phase2_learning_rate",
}  # the last for hyperparameter sweeps (elastic_lib.analysis.selection)


# ---------------------------------------------------------------- profiles
@dataclass
class Profile:
    name: str
    description: str
    runs: list[RunConfig] = field(default_factory=list)
    requires_gpu: bool = False  # ./run_all.sh refuses it without a GPU unless --allow-cpu
    study: dict | None = None  # {"notebook": path of notebooks/<name>.ipynb, "parameters": {...}}


def profile_path(name: str) -> str:
    return name if name.endswith((".yaml", ".yml")) else os.path.join(ROOT, "experiments", f"{name}.yaml")


def list_profiles() -> list[str]:
    folder = os.path.join(ROOT, "experiments")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def _read_profile(path: str) -> tuple[dict, dict, dict, dict]:
    """(spec, defaults, grid, overrides) of a profile file, with its keys and shapes checked."""
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    where = f"profile {os.path.basename(path)}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(PROFILE_KEYS)}")
    unknown = sorted(set(spec) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(PROFILE_KEYS)}")
    parts = {key: spec.get(key) or {} for key in ("defaults", "grid", "overrides")}
    for key, value in parts.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    if spec.get("base"):
        base_path = profile_path(str(spec["base"]))
        if not os.path.isfile(base_path) or os.path.abspath(base_path) == os.path.abspath(path):
            raise ConfigError(
                f"{where}: base {spec['base']!r} is not another profile; valid: {', '.join(list_profiles())}"
            )
        _, b_defaults, b_grid, b_overrides = _read_profile(base_path)
        parts = {
            "defaults": {**b_defaults, **parts["defaults"]},
            "grid": {**b_grid, **parts["grid"]},
            "overrides": {
                k: {**b_overrides.get(k, {}), **parts["overrides"].get(k, {})}
                for k in {**b_overrides, **parts["overrides"]}
            },
        }
    bad = sorted(set(parts["grid"]) - GRID_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown grid key(s) {bad}; valid grid keys: {sorted(GRID_KEYS)}")
    return spec, parts["defaults"], parts["grid"], parts["overrides"]


def load_profile(name: str, results_root: str | None = None) -> Profile:
    """Expand ``experiments/<name>.yaml`` into validated RunConfigs with their run directories."""
    path = profile_path(name)
    if not os.path.isfile(path):
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(list_profiles())}")
    spec, defaults, grid, overrides = _read_profile(path)
    where = f"profile {os.path.basename(path)}"
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    seeds = axes.get("seed", [defaults.get("seed", 0)])
    # grid axes beyond backbone/dataset/variant/seed that vary are part of the run directory name
    extra_axes = [
        k for k, v in axes.items() if len(v) > 1 and k not in ("backbone", "dataset", "variant", "seed", "label_mode")
    ]
    prof_name = os.path.splitext(os.path.basename(path))[0]
    root = results_root or os.path.join(ROOT, "results")
    cases = _cases(spec.get("cases"), where)
    runs = []
    for combo in itertools.product(*axes.values()):
        grid_params = dict(zip(axes, combo))
        for case, pinned in cases.items():
            if any(k in grid_params and grid_params[k] != v for k, v in pinned.items()):
                continue  # the case pins a grid axis to another value (e.g. variant: elastic)
            runs.append(
                _case_run(
                    {**defaults, **grid_params, **pinned},
                    case,
                    cases,
                    overrides,
                    where,
                    os.path.join(root, prof_name),
                    len(seeds) > 1,
                    extra_axes,
                )
            )
    known = {r.backbone for r in runs} | {r.run_id() for r in runs}
    for key, value in overrides.items():  # a typo in a key would otherwise be silently ignored
        if key not in known:
            raise ConfigError(
                f"{where}: overrides key {key!r} is neither a backbone nor a run id of the grid; valid: {sorted(known)}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: overrides for {key!r} must be a mapping of parameters")
    ids = [r.output_dir for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: two runs of the grid share a run directory; vary only grid axes")
    return Profile(
        prof_name,
        str(spec.get("description", "")),
        runs,
        bool(spec.get("requires_gpu", False)),
        _study(spec.get("study"), where),
    )


def _study(study, where: str) -> dict | None:
    """A profile's ``study``: the notebook (``notebooks/<name>.ipynb``) that ./run_all.sh runs once
    after the grid's runs, and its parameters."""
    if study is None:
        return None
    if not isinstance(study, dict) or set(study) - STUDY_KEYS or not isinstance(study.get("notebook"), str):
        raise ConfigError(
            f"{where}: 'study' must be a mapping with 'notebook' (a name under notebooks/) and "
            f"optionally 'parameters' (a mapping), got {study!r}"
        )
    path = os.path.join(ROOT, "notebooks", f"{study['notebook']}.ipynb")
    if not os.path.isfile(path):
        raise ConfigError(
            f"{where}: study notebook {study['notebook']!r} not found: expected {os.path.relpath(path, ROOT)}"
        )
    params = study.get("parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: study 'parameters' must be a mapping, got {type(params).__name__}")
    return {"notebook": path, "parameters": params}


def _case_run(
    params: dict,
    case: str,
    cases: dict,
    overrides: dict,
    where: str,
    folder: str,
    with_seed: bool,
    extra_axes: list[str],
) -> RunConfig:
    """One run of the grid: its parameters with the overrides, its directory under ``folder``
    (the id, the varying extra axes, the case), ``refinery_run: @<case>`` resolved."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    ident = RunConfig(**{k: v for k, v in params.items() if k in fields})  # not validated yet: only its id
    extra = {**overrides.get(ident.backbone, {}), **overrides.get(ident.run_id(), {})}
    name = ident.run_id(with_seed=with_seed)
    name += "".join(f"__{k}-{str(params[k]).replace(',', '+').replace(' ', '')}" for k in extra_axes)
    ref = str(params.get("refinery_run", ""))
    if ref.startswith("@"):  # @<case>: that case's run of the same grid point
        if ref[1:] not in cases or list(cases).index(ref[1:]) >= list(cases).index(case):
            raise ConfigError(
                f"{where}: case {case!r}: refinery_run {ref!r} must name an earlier case; cases: {list(cases)}"
            )
        params["refinery_run"] = _repo_path(os.path.join(folder, f"{name}__{ref[1:]}"))
    cfg = _checked({**params, **extra}, f"{where}{' (with its overrides)' if extra else ''}")
    cfg.output_dir = os.path.join(folder, name + (f"__{case}" if case else ""))
    return cfg


def _cases(cases, where: str) -> dict[str, dict]:
    """A profile's ``cases``: named parameter sets crossed with the grid (each run directory ends in
    ``__<case>``); a case that pins a grid axis (``variant: elastic``) runs only at that value.
    Without cases, one unnamed case."""
    if cases is None:
        return {"": {}}
    if not isinstance(cases, dict) or not cases or not all(isinstance(v, dict) or v is None for v in cases.values()):
        raise ConfigError(f"{where}: 'cases' must map case names to parameter mappings, got {cases!r}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name, params in cases.items():
        bad = sorted(set(params or {}) - fields)
        if bad or not str(name).replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"{where}: case {name!r}: a name of letters, digits, - and _, and RunConfig parameters (unknown: {bad})"
            )
    return {str(k): dict(v or {}) for k, v in cases.items()}


def _repo_path(path: str) -> str:
    """``path`` relative to the repo when inside it (no machine paths in params.yaml)."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def _checked(params: dict, where: str) -> RunConfig:
    try:
        return RunConfig.from_dict(params)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
