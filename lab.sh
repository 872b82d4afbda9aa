#!/usr/bin/env bash
# Explore interactively: JupyterLab from the project env (.venv, created on first use), rooted at
# the repo. The tracked notebooks are templates and are not saved (make a personal copy in
# notebooks/personal/); runs started here write to results/interactive/ (git-ignored).
# Extra arguments go to `jupyter lab`, e.g. ./lab.sh --no-browser --ip 0.0.0.0 --port 8888
source "$(dirname "$0")/scripts/env.sh"
ROOT_OK=(); [ "$(id -u)" = 0 ] && ROOT_OK=(--allow-root)   # Jupyter refuses root without it (containers)
exec jupyter lab --ServerApp.root_dir="$ROOT" "${ROOT_OK[@]}" "$@"
