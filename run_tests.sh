#!/usr/bin/env bash
# The test suite (docs/testing.md). Three tiers:
#   ./run_tests.sh           every test but the deep tier: `pytest --nbval` from the root (unit tests,
#                            the driver on tiny runs, both template notebooks) on ELASTIC_BACKEND (default
#                            tensorflow, .venv/), then the tests that differ by backend on every backend
#                            of ELASTIC_TEST_BACKENDS (default "jax"; "" for none, "jax torch" for both),
#                            each in its own environment (.venv-jax/, .venv-torch/), set up first: the
#                            cross-backend tests of the main run compare against them
#   ./run_tests.sh --quick   the tests that train nothing, main backend only (the edit-test loop)
#   ./run_tests.sh --deep    the default tier plus the deep one (long real training: 20 kill trials on
#                            MobileNet runs, the smoke run under another ISA and on JAX); run it before
#                            regenerating results
# Other arguments go to the main run's pytest; with them, the other backends' runs are skipped.
# Tests run on ELASTIC_TEST_WORKERS parallel workers (pytest-xdist; default: one per core, "0" for
# none); a file's tests stay on one worker (--dist loadfile: a notebook's cells share one kernel,
# module fixtures are built once; the tests of the shared tiny batch are all in tests/test_faults.py).
# Every run ends with its 25 slowest tests (pyproject.toml: --durations=25).
set -euo pipefail
cd "$(dirname "$0")"
TIER=default
if [ "${1:-}" = "--quick" ] || [ "${1:-}" = "--deep" ]; then TIER="${1#--}"; shift; fi
MAIN="${ELASTIC_BACKEND:-tensorflow}"
OTHERS=""
if [ "$TIER" != quick ]; then
  for b in ${ELASTIC_TEST_BACKENDS-jax}; do [ "$b" = "$MAIN" ] || OTHERS="$OTHERS $b"; done
fi
t0=$SECONDS
(source scripts/env.sh)
for b in $OTHERS; do ELASTIC_BACKEND="$b" bash -c 'source scripts/env.sh'; done
echo "[tests] environments ready in $((SECONDS - t0)) s" >&2
# The files holding the tests whose outcome depends on the Keras backend (marked `backend`: building,
# counts, training, heads, staged early exit, refinery, resume; the policy zoo, which must run without
# TensorFlow). PyTorch (a 190 MB CPU wheel) runs
# tests/test_backends.py only.
tests_for() {
  case "$1" in
    torch) echo tests/test_backends.py tests/test_golden_complexity.py ;;
    *) echo tests/test_backends.py tests/test_golden_complexity.py tests/test_gpu_path.py tests/test_training.py tests/test_heads.py tests/test_early_exit.py \
            tests/test_refinery.py tests/test_recipe.py tests/test_zoo.py ;;
  esac
}
case "$TIER" in
  quick) FLAGS=(--quick) ;;
  deep) FLAGS=(--deep) ;;
  *) FLAGS=() ;;
esac
WORKERS="${ELASTIC_TEST_WORKERS:-auto}"
[ "$WORKERS" = 0 ] || FLAGS+=(-n "$WORKERS" --dist loadfile)
t1=$SECONDS
(source scripts/env.sh && python -m pytest --nbval ${FLAGS[@]+"${FLAGS[@]}"} "$@")
echo "[tests] $TIER tier on $MAIN: $((SECONDS - t1)) s" >&2
[ $# -eq 0 ] || exit 0
for b in $OTHERS; do
  t1=$SECONDS
  echo "[tests] the backend-dependent tests on $b" >&2
  ELASTIC_BACKEND="$b" bash -c "source scripts/env.sh && python -m pytest ${FLAGS[*]+${FLAGS[*]}} \
    -m 'backend and not tensorflow_leg' $(tests_for "$b")"
  echo "[tests] $TIER tier on $b: $((SECONDS - t1)) s" >&2
done
echo "[tests] all: $((SECONDS - t0)) s" >&2
