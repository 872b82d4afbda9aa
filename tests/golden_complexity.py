"""The registry's complexity golden file (pycls-style): every backbone with every exit and a GAP final
head, 10 classes, at its minimum input size, its per-output params, kernel MACs, MACs, FLOPs and depths.
Generated on TensorFlow, checked on every backend (tests/test_backends.py): the counts are a property
of the architecture, so any backend, Keras version or refactor that moves one is caught.

    python tests/golden_complexity.py      # rewrites tests/reference/registry_complexity.json
"""

import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "reference" / "registry_complexity.json"


def registry_counts(names=None) -> dict:
    from elastic_lib.control.registry import get_backbone, list_backbones
    from elastic_lib.models import complexity
    from elastic_lib.models.exits import build_elastic_model

    out = {}
    for name in names or list_backbones():
        model = build_elastic_model(name, 10, get_backbone(name).min_size, exits="all", final_head="gap")
        frame = complexity.complexity_frame(model)
        out[name] = frame.drop(columns=["tap_layer"], errors="ignore").to_dict("list")
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    GOLDEN.write_text(json.dumps(registry_counts(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
