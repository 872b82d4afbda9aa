"""The golden file's default-size section and docs/models.md (tests/golden_complexity.py).

- docs/models.md is what the generator renders from the committed golden file (no model is built).
- The section matches freshly built models: a few fast backbones on every run, the others in the
  ``slow`` tier; both on every Keras backend (marked ``backend``).
- Independently of the complexity walker: the total params are Keras' own ``count_params()``, and the
  elastic model is the baseline plus one Dense(channels at the tap -> 10 classes) head per exit, the
  channels read from the backbone's layer output shapes.
"""

import pytest
from golden_complexity import (
    DEFAULT_FINAL_HEAD,
    DEFAULT_SIZE,
    MODELS_MD,
    NUM_CLASSES,
    build_default_pair,
    default_size_entry,
    free_models,
    load_golden,
    render_models_md,
)

from conftest import REFERENCE_DIR  # noqa: F401  (the tests' conftest first: environment before Keras)
from elastic_lib.control.registry import get_backbone, list_backbones

FAST = ["tiny_cnn", "mobilenet_0.75", "vgg16"]  # under a second each at default size on 2 CPU cores
SLOW = [name for name in list_backbones() if name not in FAST]


def test_models_md_is_rendered_from_the_golden_file():
    assert MODELS_MD.read_text() == render_models_md(load_golden()), (
        "docs/models.md is generated: python tests/golden_complexity.py"
    )


def test_the_default_size_section_covers_the_registry_and_is_consistent():
    section = load_golden()[DEFAULT_SIZE]
    assert sorted(section) == sorted(list_backbones()), "python tests/golden_complexity.py after a registry change"
    assert set(FAST) <= set(section)
    for name, entry in section.items():
        assert entry["image_size"] == get_backbone(name).default_size, name
        assert (entry["num_classes"], entry["final_head"]) == (NUM_CLASSES, DEFAULT_FINAL_HEAD), name
        base, ela = entry["baseline"], entry["elastic"]
        assert base["num_outputs"] == 1, name
        n_exits = ela["num_outputs"] - 1
        assert n_exits >= 1, name
        assert len(ela["exit_tap_layers"]) == len(ela["exit_params_to_output"]) == n_exits, name
        assert len(ela["exit_kernel_macs_to_output"]) == n_exits, name
        for conv in ("kernel_macs", "macs", "flops"):  # the exits do not feed the final output
            assert ela[f"{conv}_to_final"] == base[f"{conv}_to_final"] > 0, (name, conv)
        assert ela["exit_kernel_macs_to_output"] == sorted(ela["exit_kernel_macs_to_output"]), name
        assert ela["total_params"] > base["total_params"], name


def exit_head_params(name: str, baseline) -> tuple[list[str], int]:
    """The default exit taps (the registry's rule) and the params of their Dense(c -> 10) heads, c the
    tap's channels as Keras reports the layer's output shape."""
    taps = get_backbone(name).tap_rule(baseline)
    channels = [int(baseline.get_layer(tap).output.shape[-1]) for tap in taps]
    return taps, sum(c * NUM_CLASSES + NUM_CLASSES for c in channels)


def param_problems(name: str, elastic, baseline, entry: dict) -> list[str]:
    """What Keras' own bookkeeping disagrees with in a golden entry (empty: nothing)."""
    problems = []
    for kind, model in (("elastic", elastic), ("baseline", baseline)):
        if entry[kind]["total_params"] != model.count_params():
            problems.append(f"{kind}: golden {entry[kind]['total_params']} != count_params() {model.count_params()}")
    taps, heads = exit_head_params(name, baseline)
    if entry["elastic"]["exit_tap_layers"] != taps or len(elastic.outputs) != len(taps) + 1:
        problems.append(f"exit taps: golden {entry['elastic']['exit_tap_layers']}, registry rule {taps}")
    if entry["baseline"]["total_params"] != entry["elastic"]["total_params"] - heads:
        problems.append(
            f"baseline {entry['baseline']['total_params']} != elastic {entry['elastic']['total_params']}"
            f" - {len(taps)} exit heads ({heads})"
        )
    return problems


def check_default_size(name: str) -> None:
    golden = load_golden()[DEFAULT_SIZE][name]
    elastic, baseline = build_default_pair(name)
    try:
        assert default_size_entry(name, elastic, baseline) == golden, (
            f"{name}: python tests/golden_complexity.py if the change is meant"
        )
        assert param_problems(name, elastic, baseline, golden) == [], name
    finally:
        del elastic, baseline
        free_models()


@pytest.mark.backend
@pytest.mark.parametrize("name", FAST)
def test_default_size_counts_match_fresh_models(name):
    check_default_size(name)


@pytest.mark.slow
@pytest.mark.backend
@pytest.mark.parametrize("name", SLOW)
def test_default_size_counts_match_fresh_models_for_the_rest_of_the_registry(name):
    """With the test above: every registry backbone (about 70 s on 2 CPU cores)."""
    check_default_size(name)


def test_the_checks_catch_another_exit_head():
    """Cosine exit heads (no bias) change the params: the golden entry and the head arithmetic both disagree."""
    from elastic_lib.models.exits import build_elastic_model

    golden = load_golden()[DEFAULT_SIZE]["tiny_cnn"]
    size = get_backbone("tiny_cnn").default_size
    elastic = build_elastic_model("tiny_cnn", NUM_CLASSES, size, exits="all", head="am_softmax")
    baseline = build_elastic_model("tiny_cnn", NUM_CLASSES, size, exits="none", head="am_softmax")
    try:
        assert default_size_entry("tiny_cnn", elastic, baseline) != golden
        problems = param_problems("tiny_cnn", elastic, baseline, default_size_entry("tiny_cnn", elastic, baseline))
        assert len(problems) == 1 and problems[0].startswith("baseline "), problems
    finally:
        del elastic, baseline
        free_models()
