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

# ---------------------------------------------------------------- ELASTIC_PYTHON: a box that has a backend
# (scripts/env.sh; docs/backends-and-gpus.md#setting-up-on-a-box-that-has-a-backend-offline)

# The interpreter ELASTIC_PYTHON names, as an absolute path (not resolved: a venv's python is a link):
# `active` is python3 on PATH.
box_python() {
  local want="${ELASTIC_PYTHON:-}" py
  [ "$want" = active ] && want=python3
  case "$want" in
    */*) py="$want" ;;
    *) py="$(command -v "$want" 2>/dev/null || true)" ;;
  esac
  if [ -z "$py" ] || [ ! -x "$py" ] || [ -d "$py" ]; then
    echo "ELASTIC_PYTHON=$ELASTIC_PYTHON: no such interpreter (a path to a python, or \`active\` for python3 on PATH)" >&2
    return 2
  fi
  case "$py" in /*) ;; *) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac
  echo "$py"
}

# The first of jax, torch, tensorflow that imports in interpreter $1.
box_backend() {
  "$1" - 2>/dev/null <<'PY' || { echo "no Keras backend (jax, torch, tensorflow) imports in $1: install one there or set ELASTIC_BACKEND" >&2; return 2; }
import importlib, sys
for name in ("jax", "torch", "tensorflow"):
    try:
        importlib.import_module(name)
    except Exception:
        continue
    print(name)
    sys.exit(0)
sys.exit(1)
PY
}

# Venv $2 on interpreter $1 with --system-site-packages (made without pip, offline; reused while $1
# is the same): it sees what $1 sees (also the site folders of $1 that a venv on it would not, when
# $1 is itself a venv or has a user site) and this checkout ($3) on sys.path; installs go into it.
box_venv() {
  local base="$1" venv="$2" root="$3" sp
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.elastic-base" 2>/dev/null)" = "$base" ]; then return 0; fi
  if [ -e "$venv" ]; then echo "[env] $venv was made from another interpreter: making it again from $base" >&2; fi
  rm -rf "$venv"
  "$base" -m venv --without-pip --system-site-packages "$venv" >&2 || {
    echo "[env] $base -m venv could not make $venv (Debian/Ubuntu: apt install python3-venv)" >&2; return 2; }
  sp="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  "$base" - "$root" > "$sp/_elastic_box.pth" <<'PY'
import os, site, sys
std = set(site.getsitepackages([sys.base_prefix]))
extra = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and p not in std and os.path.isdir(p)]
print(sys.argv[1])
if extra:
    print(f"import site; list(map(site.addsitedir, {extra!r}))")
PY
  echo "$base" > "$venv/.elastic-base"
}

# Runs a pip command, or only prints it when ELASTIC_SETUP_DRY_RUN=1.
box_pip() {
  if [ "${ELASTIC_SETUP_DRY_RUN:-0}" = 1 ]; then echo "[env] dry run: $*" >&2; return 0; fi
  "$@"
}

# Installs requirements $2... into the venv of python $1: offline from ELASTIC_WHEELS (--no-index)
# when it is set, else from pip's index; says what to do when that fails.
box_install() {
  local py="$1"; shift
  local src=() where="pip's package index"
  if [ -n "${ELASTIC_WHEELS:-}" ]; then
    [ -d "$ELASTIC_WHEELS" ] || { echo "[env] ELASTIC_WHEELS=$ELASTIC_WHEELS is not a folder" >&2; return 2; }
    src=(--no-index --find-links "$(cd "$ELASTIC_WHEELS" && pwd)")
    where="the wheels in ELASTIC_WHEELS=$ELASTIC_WHEELS (offline)"
  fi
  echo "[env] installing $* from $where" >&2
  if [ "${ELASTIC_SETUP_DRY_RUN:-0}" != 1 ] && ! "$py" -m pip --version >/dev/null 2>&1; then
    "$py" -m ensurepip --default-pip >&2 || true
  fi
  box_pip "$py" -m pip install -q --disable-pip-version-check ${src[@]+"${src[@]}"} "$@" >&2 && return 0
  if [ -n "${ELASTIC_WHEELS:-}" ]; then
    echo "[env] could not install $* from ELASTIC_WHEELS=$ELASTIC_WHEELS: put wheels for them (and for whatever they need that is not installed) in that folder; on a machine with internet: scripts/wheels.sh DIR --python-version $("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') $*" >&2
  else
    echo "[env] could not install $* from pip's index. Offline? Put wheels for them in a folder (on a machine with internet: scripts/wheels.sh DIR) and set ELASTIC_WHEELS=DIR" >&2
  fi
  return 2
}
