"""The registry's complexity golden file (pycls-style) and the model table made from it.

``tests/reference/registry_complexity.json`` has two sections:

- ``per_output_min_size`` (``registry_counts()``): every backbone with every exit and a GAP final head,
  10 classes, at its minimum input size: its per-output params, kernel MACs, MACs, FLOPs and depths.
  Checked on every backend (tests/test_backends.py).
- ``default_size`` (``default_size_counts()``): every backbone at its default (ImageNet) input size,
  10 classes, flatten final head (RunConfig's default), as the elastic model (every exit) and as the
  baseline (no exit): total params, the final output's cost in each convention, the number of outputs,
  and the elastic model's per-exit taps, params and kernel MACs. Checked, and against Keras' own
  parameter count, by tests/test_golden_complexity.py.

Generated on TensorFlow: the counts are a property of the architecture, so any backend, Keras version
or refactor that moves one is caught. ``docs/models.md`` is rendered from the file (``render_models_md``).

    python tests/golden_complexity.py      # rewrites the JSON file and docs/models.md
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "reference" / "registry_complexity.json"
MODELS_MD = ROOT / "docs" / "models.md"
MIN_SIZE = "per_output_min_size"
DEFAULT_SIZE = "default_size"
NUM_CLASSES = 10
DEFAULT_FINAL_HEAD = "flatten"  # RunConfig's default final head
CONVENTIONS = ("kernel_macs", "macs", "flops")  # elastic_lib.models.complexity.CONVENTIONS (no Keras import here)


def load_golden() -> dict:
    return json.loads(GOLDEN.read_text())


def registry_counts(names=None) -> dict:
    """The ``per_output_min_size`` section: {backbone: {column: [one value per output]}}."""
    from elastic_lib.control.registry import get_backbone, list_backbones
    from elastic_lib.models import complexity
    from elastic_lib.models.exits import build_elastic_model

    out = {}
    for name in names or list_backbones():
        model = build_elastic_model(name, 10, get_backbone(name).min_size, exits="all", final_head="gap")
        frame = complexity.complexity_frame(model)
        out[name] = frame.drop(columns=["tap_layer"], errors="ignore").to_dict("list")
    return out


# ---------------------------------------------------------------- the default-size section
def build_default_pair(name: str):
    """(elastic, baseline) models of ``name`` at its default size, 10 classes, flatten final head."""
    from elastic_lib.control.registry import get_backbone
    from elastic_lib.models.exits import build_elastic_model

    size = get_backbone(name).default_size
    return tuple(
        build_elastic_model(name, NUM_CLASSES, size, exits=exits, final_head=DEFAULT_FINAL_HEAD)
        for exits in ("all", "none")
    )


def _model_entry(model, frame, *, exits: bool) -> dict:
    from elastic_lib.models import complexity

    final = frame.iloc[-1]
    entry = {
        "total_params": int(complexity.model_complexity(model)["total_params"]),
        "num_outputs": len(frame),
        **{f"{conv}_to_final": int(final[f"{conv}_to_output"]) for conv in CONVENTIONS},
    }
    if exits:
        head = frame.iloc[:-1]
        entry["exit_tap_layers"] = [str(t) for t in head["tap_layer"]]
        entry["exit_params_to_output"] = [int(v) for v in head["params_to_output"]]
        entry["exit_kernel_macs_to_output"] = [int(v) for v in head["kernel_macs_to_output"]]
    return entry


def default_size_entry(name: str, elastic, baseline) -> dict:
    """One backbone's ``default_size`` entry, from its two models (``build_default_pair``)."""
    from elastic_lib.control.registry import get_backbone
    from elastic_lib.models import complexity

    return {
        "image_size": get_backbone(name).default_size,
        "num_classes": NUM_CLASSES,
        "final_head": DEFAULT_FINAL_HEAD,
        "elastic": _model_entry(elastic, complexity.complexity_frame(elastic), exits=True),
        "baseline": _model_entry(baseline, complexity.complexity_frame(baseline), exits=False),
    }


def free_models() -> None:
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def default_size_counts(names=None) -> dict:
    """The ``default_size`` section: {backbone: entry}, one model pair at a time."""
    from elastic_lib.control.registry import list_backbones

    out = {}
    for name in names or list_backbones():
        elastic, baseline = build_default_pair(name)
        out[name] = default_size_entry(name, elastic, baseline)
        del elastic, baseline
        free_models()
    return out


# ---------------------------------------------------------------- docs/models.md
def human(n: float) -> str:
    """3.21 M, 24.74 M, 568.7 M, 15.47 G: three or four significant digits and a unit."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.1f} {unit}" if abs(v) >= 100 else f"{v:.2f} {unit}"
    return f"{n:.0f}"


HEADER = """\
# Models

Generated by `python tests/golden_complexity.py` from `tests/reference/registry_complexity.json`:
do not edit by hand.

Every backbone of the registry (`elastic_lib/control/registry.py`, in its order) as the **baseline** (no
exits) and as the **elastic** model (every default exit), both with the flatten final head (RunConfig's
default), 10 classes, at the backbone's default input size. Costs are those of one image through the
final output alone (backbone and final head; the exits do not feed it, so baseline and elastic agree),
in the conventions of `elastic_lib/models/complexity.py`:
**kernel MACs** (`kernel_macs`, the original paper's count): for every Conv2D and Dense layer, prod(kernel
shape) × prod(output spatial dims), one multiply-add = 1 (depthwise convolutions, biases, BatchNorm,
activations, pooling and Add/Concatenate are not counted);
**MACs** (`macs`): every multiply-add of Conv2D (grouped included), DepthwiseConv2D and Dense;
**FLOPs** (`flops`): 2 × MACs plus element-wise work (bias, BatchNorm, activations, pooling, Add/Multiply).
The tests check these numbers against freshly built models and Keras' own `count_params()`
(tests/test_golden_complexity.py), and the per-output counts at each backbone's minimum size on every
Keras backend (tests/test_backends.py).
"""


def render_models_md(golden: dict) -> str:
    """docs/models.md from the golden file's ``default_size`` section (no model is built)."""
    from elastic_lib.control.registry import get_backbone, list_backbones

    at = "@ default size"
    cols = [
        "backbone",
        "paper Table I",
        "ImageNet weights",
        "min input (px)",
        "default input (px)",
        "outputs (elastic)",
        f"params, baseline {at}",
        f"params, elastic (overhead) {at}",
        f"kernel MACs to final, baseline {at}",
        f"kernel MACs to final, elastic {at}",
        f"FLOPs to final, baseline {at}",
        f"FLOPs to final, elastic {at}",
    ]
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 5 + ["--:"] * (len(cols) - 5)) + "|"]
    section = golden[DEFAULT_SIZE]
    for name in list_backbones():
        b, e = get_backbone(name), section[name]
        base, ela = e["baseline"], e["elastic"]
        overhead = 100 * (ela["total_params"] - base["total_params"]) / base["total_params"]
        cells = [
            f"`{name}`",
            "yes" if b.paper else "—",
            "yes" if b.imagenet else "—",
            str(b.min_size),
            str(e["image_size"]),
            str(ela["num_outputs"]),
            human(base["total_params"]),
            f"{human(ela['total_params'])} (+{overhead:.2f} %)",
            human(base["kernel_macs_to_final"]),
            human(ela["kernel_macs_to_final"]),
            human(base["flops_to_final"]),
            human(ela["flops_to_final"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    caption = f"All counts {at} (each backbone's default input), 10 classes, flatten final head:"
    return HEADER + "\n" + caption + "\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    t0 = time.monotonic()
    golden = {MIN_SIZE: registry_counts()}
    free_models()
    t1 = time.monotonic()
    golden[DEFAULT_SIZE] = default_size_counts()
    t2 = time.monotonic()
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    MODELS_MD.write_text(render_models_md(golden))
    print(f"wrote {GOLDEN} and {MODELS_MD}: min size {t1 - t0:.0f} s, default size {t2 - t1:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import elastic_lib

    elastic_lib.setup_environment()
    main()
