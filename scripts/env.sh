# Sourced by run_all.sh and run_tests.sh: the Python environment, then the runtime settings.
# - An active conda env made from environment.yml (conda activate elastic) is used as it is.
# - Otherwise .venv/ at the repo root, created on first use and reinstalled only when
#   requirements.txt, pyproject.toml or the backend's build changes. The backend is
#   ELASTIC_BACKEND=tensorflow (default, .venv/) | jax (.venv-jax/) | torch (.venv-torch/), and
#   KERAS_BACKEND follows it; its CUDA build (tensorflow[and-cuda], jax[cuda12], PyPI's torch)
#   when `nvidia-smi -L` lists an NVIDIA GPU (or ELASTIC_TF=gpu), the CPU build otherwise
#   (scripts/tf_flavour.sh).
# - ELASTIC_PYTHON=/path/to/python (or `active`: python3 on PATH) uses that interpreter and what it
#   has instead (a box with a backend installed, offline): .venv-box/ on it with
#   --system-site-packages, installing only what is missing or out of the ranges of
#   scripts/supported.txt (scripts/check_env.py), from ELASTIC_WHEELS with --no-index when set; the
#   backend is ELASTIC_BACKEND or the first of jax, torch, tensorflow that imports there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/tf_flavour.sh"
if [ -n "${ELASTIC_PYTHON:-}" ]; then
  BASE_PY="$(box_python)"
  VENV="$ROOT/.venv-box"
  box_venv "$BASE_PY" "$VENV" "$ROOT"
  if [ -n "${ELASTIC_BACKEND:-}" ]; then
    BACKEND="$(elastic_backend)"; why="ELASTIC_BACKEND"
  else
    BACKEND="$(box_backend "$VENV/bin/python")"; why="the first of jax, torch, tensorflow that imports there"
  fi
  # what to check: ELASTIC_SETUP_GROUP, else by the script that sourced this one
  case "$(basename "${BASH_SOURCE[${#BASH_SOURCE[@]}-1]}")" in
    run_tests.sh) GROUP="${ELASTIC_SETUP_GROUP:-tests}" ;;
    lab.sh) GROUP="${ELASTIC_SETUP_GROUP:-lab}" ;;
    *) GROUP="${ELASTIC_SETUP_GROUP:-run}" ;;
  esac
  echo "[env] ELASTIC_PYTHON: $BASE_PY through $VENV; backend $BACKEND ($why); checking the $GROUP group" >&2
  MISSING="$("$VENV/bin/python" "$ROOT/scripts/check_env.py" --group "$GROUP" --backend "$BACKEND")"
  if [ -z "$MISSING" ]; then
    echo "[env] everything of the $GROUP group is installed in a supported version: nothing to install" >&2
  else
    # shellcheck disable=SC2086  # one requirement a line, none with spaces
    box_install "$VENV/bin/python" $MISSING
    if [ "${ELASTIC_SETUP_DRY_RUN:-0}" != 1 ]; then
      still="$("$VENV/bin/python" "$ROOT/scripts/check_env.py" --group "$GROUP" --backend "$BACKEND")"
      [ -z "$still" ] || { echo "[env] still missing after the install: ${still//$'\n'/ }" >&2; exit 2; }
    fi
  fi
  export PATH="$VENV/bin:$PATH"
  unset BASE_PY why GROUP MISSING still
else
  BACKEND="$(elastic_backend)"
  if use_active_env; then
    echo "[env] using the active conda env $CONDA_PREFIX as it is (no .venv)" >&2
    python -c "import $BACKEND, keras, papermill" 2>/dev/null || {
      echo "[env] the active env lacks $BACKEND/keras/papermill: conda env update -f environment.yml" >&2; exit 2; }
  else
    FLAVOUR="$(tf_flavour)"
    VENV="$(venv_for "$BACKEND")"
    PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    STAMP="$VENV/.requirements.sha256"
    WANT="$( (requirements_for "$FLAVOUR" "$BACKEND"; cat "$ROOT/pyproject.toml") | sha256sum | cut -d' ' -f1)"
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
      echo "[env] setting up $VENV with the $FLAVOUR $BACKEND build (first run installs it, minutes)" >&2
      [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
      REQ="$(mktemp)"; requirements_for "$FLAVOUR" "$BACKEND" > "$REQ"
      "$VENV/bin/python" -m pip install -q --upgrade pip >&2
      # a switch between builds: both install the `tensorflow` module, so the other one goes first
      if [ "$BACKEND" = tensorflow ]; then
        other="$([ "$FLAVOUR" = gpu ] && echo tensorflow-cpu || echo tensorflow)"
        "$VENV/bin/python" -m pip uninstall -q -y "$other" >/dev/null 2>&1 || true
      fi
      if [ "$BACKEND" = torch ] && [ "$FLAVOUR" = cpu ]; then install_torch_cpu "$VENV"; fi
      "$VENV/bin/python" -m pip install -q -r "$REQ" >&2
      rm -f "$REQ"
      "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT" >&2
      echo "$WANT" > "$STAMP"
    fi
    export PATH="$VENV/bin:$PATH"
  fi
fi
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND="$BACKEND" ELASTIC_BACKEND="$BACKEND"
export PYTHONHASHSEED=0
export PYDEVD_DISABLE_FILE_VALIDATION=1
# Jupyter servers started from this env load jupyter_config/ (templates are never saved).
export JUPYTER_CONFIG_PATH="$ROOT/jupyter_config${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
cd "$ROOT"
