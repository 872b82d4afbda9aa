#!/usr/bin/env bash
# Reproduce a profile: one papermill-executed notebook per backbone/dataset/variant, then the
# aggregation notebook (tables in results/<profile>/, figures in figures/<profile>/).
#   ./run_all.sh [--profile NAME] [--only PATTERN] [--jobs N] [--force] [--data-dir DIR]
# Default: the smoke profile on the embedded digits dataset (minutes on 2 CPU cores).
# Creates/reuses .venv/ at the repo root. ./run_all.sh --help for all options.
source "$(dirname "$0")/scripts/env.sh"
exec python -m elastic_lib.control.batch "$@"
