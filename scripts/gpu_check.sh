#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the paper profile's MobileNet-0.75 elastic run shortened to
# 1 + 2 epochs on a small CIFAR subset, in-process (no Jupyter), a max-pool gradient determinism probe,
# training images/s in float32 / TF32 / bf16 and the paper profile's projected GPU-hours, written to
# results/gpu-check/{report.md,gpu_check.json}. Arguments go to `python -m benchmarks.gpu_check`.
#
# On a GPU box that already has a backend (JAX, PyTorch or TensorFlow) and no internet:
#   python scripts/make_cifar_subset.py cifar-10-python.tar.gz cifar-subset/   # elsewhere: ~9.5 MiB
#   ELASTIC_PYTHON=active ELASTIC_WHEELS=wheels/ scripts/gpu_check.sh --data-dir cifar-subset/
# (scripts/env.sh then installs only what that Python lacks of the `gpu-check` group of
# scripts/supported.txt, from wheels/). Here, on CPU: scripts/gpu_check.sh --cpu (a smoke, ~1 min).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ELASTIC_SETUP_GROUP="${ELASTIC_SETUP_GROUP:-gpu-check}"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec python -m benchmarks.gpu_check "$@"
