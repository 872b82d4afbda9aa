#!/usr/bin/env bash
# Run the whole test suite (unit tests + nbval over the committed notebooks).
# Creates/reuses .venv/ at the repo root. Extra arguments go to pytest.
source "$(dirname "$0")/scripts/env.sh"
exec python -m pytest tests \
  --nbval notebooks/elastic_experiment.ipynb notebooks/aggregate.ipynb \
  --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=900 "$@"
