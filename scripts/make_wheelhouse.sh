#!/usr/bin/env bash
# Download the wheels bench/bench_gpu.py compares against (curvlinops, BackPACK) and
# their non-torch dependencies into .whl/ (gitignored), for carrying to a GPU machine
# that cannot reach a package index.  Python 3.12, manylinux x86_64; every wheel here
# is pure Python (py3-none-any).
#
#   scripts/make_wheelhouse.sh              # what the H200 image lacks (4 wheels, < 1 MB)
#   scripts/make_wheelhouse.sh --all-deps   # also einops, opt-einsum, linear_operator
#
# Not downloaded: torch and what comes with every torch image (numpy, scipy, tqdm,
# torchvision: binary, large, and torchvision is tied to the torch build).  Installing
# with --no-deps keeps the machine's torch:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "$(date '+%H:%M:%S') [wheelhouse] $*"; }

PY=${PYTHON:-python3}
DEST=${WHEELHOUSE:-.whl}
# pins as in bench/requirements.txt
PACKAGES=(curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1 unfoldNd==0.2.3 einconv==0.1.0)
if [ "${1:-}" = "--all-deps" ]; then
  PACKAGES+=(einops==0.8.2 opt-einsum==3.4.0 linear_operator==0.6.1)
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--all-deps]" >&2
  exit 2
fi

mkdir -p "$DEST"
log "downloading ${PACKAGES[*]} into $DEST"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any -d "$DEST" "${PACKAGES[@]}"
ls -l "$DEST"
log "done: carry $DEST (see bench/README.md, section GPU (H200))"
