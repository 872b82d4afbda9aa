# Which backend and which build (CPU or CUDA) this machine gets (sourced by scripts/env.sh;
# tests/test_gpu_setup.py runs it with a fake nvidia-smi). No Python, no TensorFlow: it decides
# before anything is installed. (The name is historical: it once chose TensorFlow's build only.)
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

# The Keras backend to install and run on: ELASTIC_BACKEND=tensorflow (default) | jax | torch.
elastic_backend() {
  case "${ELASTIC_BACKEND:-tensorflow}" in
    tensorflow|jax|torch) echo "${ELASTIC_BACKEND:-tensorflow}" ;;
    *) echo "ELASTIC_BACKEND=$ELASTIC_BACKEND: use tensorflow, jax or torch (or leave it unset: tensorflow)" >&2
       return 2 ;;
  esac
}

# Pins of the other backends (TensorFlow's is in requirements.txt; environment.yml shows all three).
JAX_VERSION=0.10.2
TORCH_VERSION=2.13.0

# requirements.txt with the backend's line for FLAVOUR and BACKEND (default tensorflow).
#   tensorflow: tensorflow-cpu as pinned (cpu) or tensorflow[and-cuda] at the same version (gpu),
#               which brings the CUDA and cuDNN wheels
#   jax:        jax (cpu) or jax[cuda12] (gpu), instead of TensorFlow
#   torch:      torch's CPU build (cpu; PyTorch's CPU index, see install_torch_cpu) or PyPI's CUDA build (gpu)
requirements_for() {
  local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  case "${2:-tensorflow}" in
    tensorflow)
      if [ "$1" = gpu ]; then
        sed -E 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' "$root/requirements.txt"
      else
        cat "$root/requirements.txt"
      fi ;;
    jax)
      sed -E "s/^tensorflow-cpu==.*/jax$([ "$1" = gpu ] && echo '[cuda12]')==$JAX_VERSION/" "$root/requirements.txt" ;;
    torch)
      if [ "$1" = gpu ]; then
        sed -E "s/^tensorflow-cpu==.*/torch==$TORCH_VERSION/" "$root/requirements.txt"
      else  # the +cpu build is on PyTorch's CPU index: env.sh installs it from there first
        sed -E "s/^tensorflow-cpu==.*/torch==$TORCH_VERSION+cpu/" "$root/requirements.txt"
      fi ;;
  esac
}

# PyTorch's CPU build into venv $1: from pip's configured sources if they have it, else from
# PyTorch's own CPU index (PyPI carries the CUDA build only, ~3 GB with its NVIDIA wheels).
install_torch_cpu() {
  "$1/bin/python" -m pip install -q "torch==$TORCH_VERSION+cpu" >/dev/null 2>&1 ||
    "$1/bin/python" -m pip install -q --index-url https://download.pytorch.org/whl/cpu "torch==$TORCH_VERSION+cpu" >&2
}

# Where the backend's environment lives: .venv (TensorFlow, as ever), .venv-jax, .venv-torch.
venv_for() {
  local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ "$1" = tensorflow ]; then echo "$root/.venv"; else echo "$root/.venv-$1"; fi
}

# An active conda env made from environment.yml (named "elastic", or any env when
# ELASTIC_USE_ACTIVE_ENV=1) is used as it is: no .venv.
use_active_env() {
  [ -n "${CONDA_PREFIX:-}" ] && { [ "${CONDA_DEFAULT_ENV:-}" = elastic ] || [ "${ELASTIC_USE_ACTIVE_ENV:-0}" = 1 ]; }
}
