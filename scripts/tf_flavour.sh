# Which TensorFlow build this machine gets (sourced by scripts/env.sh; tests/test_setup.py runs it
# with a fake nvidia-smi). No Python, no TensorFlow: it decides before anything is installed.
#   ELASTIC_TF=gpu|cpu   force a build
#   otherwise            gpu when `nvidia-smi -L` lists a GPU, cpu else
tf_flavour() {
  case "${ELASTIC_TF:-auto}" in
    gpu|cpu) echo "$ELASTIC_TF"; return ;;
    auto) ;;
    *) echo "ELASTIC_TF=$ELASTIC_TF: use gpu, cpu or leave it unset (auto)" >&2; return 2 ;;
  esac
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU [0-9]'; then
    echo gpu
  else
    echo cpu
  fi
}

# requirements.txt with TensorFlow's line for FLAVOUR (cpu: tensorflow-cpu as pinned; gpu:
# tensorflow[and-cuda] at the same version, which brings the CUDA and cuDNN wheels).
requirements_for() {
  local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ "$1" = gpu ]; then
    sed -E 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' "$root/requirements.txt"
  else
    cat "$root/requirements.txt"
  fi
}

# An active conda env made from environment.yml (named "elastic", or any env when
# ELASTIC_USE_ACTIVE_ENV=1) is used as it is: no .venv.
use_active_env() {
  [ -n "${CONDA_PREFIX:-}" ] && { [ "${CONDA_DEFAULT_ENV:-}" = elastic ] || [ "${ELASTIC_USE_ACTIVE_ENV:-0}" = 1 ]; }
}
