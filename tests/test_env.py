"""Environment files agree; the notebook's parameters cell matches RunConfig."""
import dataclasses
import re
from pathlib import Path

import yaml

from elastic_lib.config import RunConfig

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


def test_notebook_parameters_cell_declares_every_runconfig_field():
    import papermill

    declared = papermill.inspect_notebook(str(ROOT / "notebooks" / "elastic_experiment.ipynb"))
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    assert set(declared) == set(fields)
    # the notebook's own defaults form a valid configuration
    params = {name: eval(p["default"]) for name, p in declared.items()}  # noqa: S307 (our own notebook)
    RunConfig.from_dict(params)
    for name, p in declared.items():
        assert p["help"], f"parameter {name} has no comment"


def test_profiles_expand_and_validate():
    from elastic_lib.config import list_profiles, load_profile

    assert {"smoke", "cifar-mini", "paper"} <= set(list_profiles())
    for name in list_profiles():
        assert load_profile(name).runs
    mini = {r.run_id(): r for r in load_profile("cifar-mini").runs}
    assert mini["inception_v3__cifar10__elastic"].image_size == 75  # override beats a default below its minimum
    assert mini["densenet169__cifar100__elastic"].compare_depth_of == "densenet121"
    paper = load_profile("paper")
    assert {r.backbone for r in paper.runs} == {"mobilenet_0.75", "inception_v3", "resnet50", "densenet121",
                                                 "densenet169", "vgg16"}
    assert all(r.image_size == 224 and r.weights == "imagenet" for r in paper.runs)
    assert {r.dataset for r in paper.runs} == {"cifar10", "cifar100"}
    assert len({r.output_dir for r in paper.runs}) == len(paper.runs) == 24
