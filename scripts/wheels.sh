#!/usr/bin/env bash
# A folder of wheels for a box without internet that has a Keras backend (docs/backends-and-gpus.md,
# "Setting up on a box that has a backend (offline)"). Run it on a machine with internet, carry DIR
# to the box beside the checkout and set ELASTIC_WHEELS=DIR there (with ELASTIC_PYTHON).
#   scripts/wheels.sh DIR [--python-version 3.12] [--platform TAG]... [REQUIREMENT...]
# Downloads binary wheels only, for the box's Python and platform (default 3.12,
# manylinux2014_x86_64), of the REQUIREMENTs, by default what the GPU box lacks of the gpu-check
# group: keras, namex and optree in the ranges of scripts/supported.txt (about 3 MB). Without their
# dependencies (--no-deps): name whatever else a box lacks; on the box,
#   python3 scripts/check_env.py --group gpu-check --backend jax
# prints it. ELASTIC_SETUP_DRY_RUN=1 prints the pip command instead of running it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help|-*) usage ;; esac
DIR="$1"; shift
PYV=3.12
PLATFORMS=()
REQS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYV="${2:?--python-version needs a value, e.g. 3.12}"; shift 2 ;;
    --platform) PLATFORMS+=("${2:?--platform needs a tag, e.g. manylinux2014_x86_64}"); shift 2 ;;
    -h|--help) usage ;;
    -*) echo "wheels.sh: unknown option $1" >&2; usage ;;
    *) REQS+=("$1"); shift ;;
  esac
done
[ ${#PLATFORMS[@]} -gt 0 ] || PLATFORMS=(manylinux2014_x86_64)
if [ ${#REQS[@]} -eq 0 ]; then
  mapfile -t REQS < <(grep -E '^(keras|namex|optree)[[:space:]]*([<>=!~]|$)' "$ROOT/scripts/supported.txt" | sed 's/[[:space:]]*#.*//')
fi
ABI="cp${PYV//./}"
CMD=("${PYTHON:-python3}" -m pip download --only-binary=:all: --no-deps --python-version "$PYV" --implementation cp
     --abi "$ABI" --abi abi3 --abi none -d "$DIR")
for p in "${PLATFORMS[@]}"; do CMD+=(--platform "$p"); done
CMD+=(--platform any "${REQS[@]}")
if [ "${ELASTIC_SETUP_DRY_RUN:-0}" = 1 ]; then echo "[wheels] dry run: ${CMD[*]}" >&2; exit 0; fi
mkdir -p "$DIR"
"${CMD[@]}" >&2 || {
  echo "[wheels] pip download failed: this needs pip's index (internet); a wheel missing for Python $PYV on ${PLATFORMS[*]}? try another --platform (e.g. manylinux_2_28_x86_64)" >&2
  exit 2; }
echo "[wheels] $(du -sh "$DIR" | cut -f1) in $DIR: $(cd "$DIR" && ls -- *.whl | tr '\n' ' ')" >&2
echo "[wheels] on the box: ELASTIC_WHEELS=$DIR ELASTIC_PYTHON=/path/to/python3 ./run_all.sh ..." >&2
