#!/usr/bin/env bash
# Run the whole test suite: `pytest --nbval` from the root (unit tests + nbval over the two
# template notebooks; settings in pyproject.toml). Creates/reuses .venv/ at the repo root.
# Extra arguments go to pytest.
source "$(dirname "$0")/scripts/env.sh"
exec python -m pytest --nbval "$@"
