"""Environment files agree; the notebook's parameters cell matches RunConfig."""

import ast
import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from elastic_lib.control.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([^\s;]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_requirements_and_environment_yml_pin_the_same_versions():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = _pins(pip_section)
    assert req.pop("tensorflow-cpu") == conda.pop("tensorflow"), "TensorFlow versions differ"
    assert req == conda
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])
    for package in ("jupyterlab", "papermill", "keras", "matplotlib", "seaborn", "nbval"):
        assert package in req, f"{package} is on the design card but not pinned"


def test_every_template_parameters_cell_is_generated_from_its_dataclass():
    """RunConfig, AggregateConfig and PruningConfig are the one place for the notebooks' parameters
    and defaults: each template's cell is their output (``python -m elastic_lib.control.notebook_cells
    --write``), and the check says which is stale."""
    from elastic_lib.control import notebook_cells

    assert notebook_cells.stale_notebooks() == []
    assert notebook_cells.main([]) == 0


@pytest.mark.parametrize(
    "path", ["notebooks/elastic_experiment.ipynb", "notebooks/aggregate.ipynb", "notebooks/channel_pruning.ipynb"]
)
def test_notebook_parameters_cell_declares_every_field(path):
    import papermill

    from elastic_lib.control.notebook_cells import SCHEMAS

    schema = SCHEMAS[path]
    declared = papermill.inspect_notebook(str(ROOT / path))
    fields = {f.name: f for f in dataclasses.fields(schema)}
    assert set(declared) == set(fields)
    # papermill reads the same defaults and types back, and they form a valid configuration
    params = {name: eval(p["default"]) for name, p in declared.items()}
    assert schema(**params) == schema()
    for name, p in declared.items():
        assert p["inferred_type_name"] == fields[name].type, name
        assert p["help"] == fields[name].metadata["doc"], name


def test_a_stale_cell_is_found(tmp_path, monkeypatch):
    from elastic_lib.control import notebook_cells

    nb = tmp_path / "notebooks" / "aggregate.ipynb"
    nb.parent.mkdir()
    nb.write_text(
        (ROOT / "notebooks" / "aggregate.ipynb")
        .read_text()
        .replace(r"profile: str = \"smoke\"", r"profile: str = \"tiny\"", 1)
    )
    monkeypatch.setattr(notebook_cells, "ROOT", str(tmp_path))
    monkeypatch.setattr(notebook_cells, "SCHEMAS", {"notebooks/aggregate.ipynb": notebook_cells.AggregateConfig})
    assert notebook_cells.stale_notebooks() == ["notebooks/aggregate.ipynb"]
    assert notebook_cells.write_notebook_parameters("notebooks/aggregate.ipynb")
    assert notebook_cells.stale_notebooks() == []


def test_experiment_params_leave_the_plumbing_out():
    cfg = RunConfig(output_dir="/somewhere/run", data_dir="/data", write_done=False)
    assert {
        "output_dir",
        "data_dir",
        "weights_dir",
        "write_done",
        "strategy",
        "input_pipeline",
        "loader_workers",
    } == set(cfg.plumbing())
    assert not set(cfg.plumbing()) & set(cfg.experiment_params())
    assert {**cfg.experiment_params(), **cfg.plumbing()} == cfg.to_dict()


def test_control_plane_imports_no_tensorflow_or_keras():
    code = (
        "import sys, elastic_lib, elastic_lib.control.config, elastic_lib.control.batch, elastic_lib.control.results, "
        "elastic_lib.control.reproducibility, elastic_lib.control.templates\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_run_all_list_answers_fast():
    """./run_all.sh --list (the batch driver's listing) needs no TensorFlow: well under a second
    on 2 cores; the bound is generous for loaded CI machines."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "elastic_lib.control.batch", "--list"], capture_output=True, text=True, cwd=ROOT
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_0.75__digits__elastic" in proc.stdout
    assert elapsed < 3.0, f"--list took {elapsed:.2f} s"


def test_longest_function_in_elastic_lib_is_under_50_lines():
    lengths = {}
    for path in sorted((ROOT / "elastic_lib").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    longest = max(lengths, key=lengths.get)
    assert lengths[longest] < 50, f"{longest} has {lengths[longest]} lines"


def test_profiles_expand_and_validate():
    from elastic_lib.control.profiles import list_profiles, load_profile

    assert {"smoke", "cifar-mini", "cifar-backbones", "paper"} <= set(list_profiles())
    for name in list_profiles():
        assert load_profile(name).runs
    mini = {r.run_id(): r for r in load_profile("cifar-backbones").runs}
    assert mini["inception_v3__cifar10__elastic"].image_size == 75  # override beats a default below its minimum
    assert mini["densenet169__cifar100__elastic"].compare_depth_of == "densenet121"
    converged = load_profile("cifar-mini").runs  # MobileNet-0.75, both CIFAR subsets, both variants, 3 seeds
    assert len(converged) == 12 and {r.seed for r in converged} == {0, 1, 2}
    assert {r.dataset for r in converged} == {"cifar10", "cifar100"} and {r.backbone for r in converged} == {
        "mobilenet_0.75"
    }
    assert all(r.output_dir.endswith(f"__seed{r.seed}") for r in converged)
    paper = load_profile("paper")
    assert {r.backbone for r in paper.runs} == {
        "mobilenet_0.75",
        "inception_v3",
        "resnet50_legacy",
        "densenet121",
        "densenet169",
        "vgg16",
    }
    assert all(r.image_size == 224 and r.weights == "imagenet" for r in paper.runs)
    assert {r.dataset for r in paper.runs} == {"cifar10", "cifar100"}
    assert len({r.output_dir for r in paper.runs}) == len(paper.runs) == 24
