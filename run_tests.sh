#!/usr/bin/env bash
# Run the whole test suite: `pytest --nbval` from the root (unit tests + nbval over the two
# template notebooks; settings in pyproject.toml) on ELASTIC_BACKEND (default tensorflow, .venv/),
# then the compute-plane tests on every backend of ELASTIC_TEST_BACKENDS (default "jax"; "" for
# none, "jax torch" for both), each in its own environment (.venv-jax/, .venv-torch/), which is
# set up first: the cross-backend tests of the main run compare against them.
# Extra arguments go to the main run's pytest; with arguments, the other backends' runs are skipped.
set -euo pipefail
cd "$(dirname "$0")"
MAIN="${ELASTIC_BACKEND:-tensorflow}"
OTHERS=""
for b in ${ELASTIC_TEST_BACKENDS-jax}; do [ "$b" = "$MAIN" ] || OTHERS="$OTHERS $b"; done
for b in $OTHERS; do ELASTIC_BACKEND="$b" bash -c 'source scripts/env.sh'; done
# The compute plane on another backend: building, counting, training, evaluation, early exit.
# PyTorch (a 190 MB CPU wheel) runs the registry builds and the backend tests only.
tests_for() {
  case "$1" in
    torch) echo tests/test_backends.py tests/test_backbones.py ;;
    *) echo tests/test_backends.py tests/test_backbones.py tests/test_complexity.py tests/test_heads.py \
            tests/test_training.py tests/test_early_exit.py tests/test_metrics.py tests/test_efficientnet_cifar.py \
            tests/test_inception_v4.py tests/test_refinery.py ;;
  esac
}
(source scripts/env.sh && python -m pytest --nbval "$@")
[ $# -eq 0 ] || exit 0
for b in $OTHERS; do
  echo "[tests] the compute plane on $b" >&2
  ELASTIC_BACKEND="$b" bash -c "source scripts/env.sh && python -m pytest $(tests_for "$b")"
done
