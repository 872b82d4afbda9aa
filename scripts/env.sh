# Sourced by run_all.sh and run_tests.sh: the Python environment, then the runtime settings.
# - An active conda env made from environment.yml (conda activate elastic) is used as it is.
# - Otherwise .venv/ at the repo root, created on first use and reinstalled only when
#   requirements.txt, pyproject.toml or the TensorFlow build changes. The build is
#   tensorflow[and-cuda] when `nvidia-smi -L` lists an NVIDIA GPU (or ELASTIC_TF=gpu),
#   tensorflow-cpu otherwise (scripts/tf_flavour.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/tf_flavour.sh"
if use_active_env; then
  echo "[env] using the active conda env $CONDA_PREFIX as it is (no .venv)" >&2
  python -c "import tensorflow, keras, papermill" 2>/dev/null || {
    echo "[env] the active env lacks tensorflow/keras/papermill: conda env update -f environment.yml" >&2; exit 2; }
else
  FLAVOUR="$(tf_flavour)"
  VENV="$ROOT/.venv"
  PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  STAMP="$VENV/.requirements.sha256"
  WANT="$( (requirements_for "$FLAVOUR"; cat "$ROOT/pyproject.toml") | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[env] setting up $VENV with the $FLAVOUR TensorFlow build (first run installs it, minutes)" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    REQ="$(mktemp)"; requirements_for "$FLAVOUR" > "$REQ"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    # a switch between builds: both install the `tensorflow` module, so the other one goes first
    other="$([ "$FLAVOUR" = gpu ] && echo tensorflow-cpu || echo tensorflow)"
    "$VENV/bin/python" -m pip uninstall -q -y "$other" >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q -r "$REQ" >&2
    rm -f "$REQ"
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT" >&2
    echo "$WANT" > "$STAMP"
  fi
  export PATH="$VENV/bin:$PATH"
fi
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow PYTHONHASHSEED=0
export PYDEVD_DISABLE_FILE_VALIDATION=1
# Jupyter servers started from this env load jupyter_config/ (templates are never saved).
export JUPYTER_CONFIG_PATH="$ROOT/jupyter_config${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
cd "$ROOT"
