#!/usr/bin/env bash
# One-time, idempotent set-up: system packages (speech synthesizers, sox, text
# corpora) and the asr_hf Python package with its pinned dependencies.
# Used by both README commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "$(date '+%H:%M:%S') [setup] $*"; }

APT_PACKAGES=(espeak-ng flite sox libsndfile1 fortunes fortunes-min)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "system packages present"
fi

PY=${PYTHON:-python3}
# checked from / so the source tree on the cwd cannot pass for an installed package
if ! (cd / && $PY -c "import asr_hf, torch, torchaudio, lhotse, kaldi_hmm_gmm, kaldifst, kaldilm, kaldingram" 2>/dev/null) \
   || [ pyproject.toml -nt .setup.stamp ]; then
  log "installing asr_hf and its Python dependencies"
  $PY -m pip install -q --disable-pip-version-check -e ".[dev]"
  touch .setup.stamp
else
  log "python packages present"
fi
log "done"
