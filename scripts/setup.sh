#!/usr/bin/env bash
# One-time, idempotent set-up, used by both README commands and by .ci/run:
#   1. system packages (speech synthesizers, sox, text corpora) with apt-get;
#   2. a virtual environment (default: .venv in the repo; ASR_HF_VENV=/path to put it
#      elsewhere) holding asr_hf and EXACTLY the versions pinned in requirements.lock;
#   3. a check that every pinned package is the locked version and works
#      (scripts/verify_install.py): any failure stops set-up with one line naming the
#      package and its version.
#
# Nothing is installed into the system Python, so other Python projects on the machine
# are untouched.  The recipes (recipes/common/path.sh) and the test command use this
# environment.  Re-running reinstalls only when pyproject.toml or requirements.lock
# changed since the last successful install; it always re-verifies.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { echo "$(date '+%H:%M:%S') [setup] $*"; }
die() { echo "setup: FAILED: $*" >&2; exit 1; }

APT_PACKAGES=(espeak-ng flite sox libsndfile1 fortunes fortunes-min)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get could not install: ${missing[*]}"
else
  log "system packages present"
fi

PY=${PYTHON:-python3}
venv=${ASR_HF_VENV:-$repo/.venv}
PIP_VERSION=26.3   # the pip that resolved requirements.lock (scripts/lock.sh)

$PY -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$($PY --version 2>&1) found as $PY; asr_hf needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
if [ ! -x "$venv/bin/python" ]; then
  log "creating the virtual environment $venv"
  $PY -m venv "$venv" || die "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"
fi
vpy="$venv/bin/python"
stamp="$venv/.asr_hf_setup.stamp"

if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$repo" ]; then
  log "installing asr_hf and its locked dependencies into $venv (torch is ~4.6 GB with its CUDA libraries)"
  pip_log="$venv/setup-pip.log"
  "$vpy" -m pip install -q --disable-pip-version-check "pip==$PIP_VERSION" > "$pip_log" 2>&1 \
    || { tail -n 20 "$pip_log" >&2; die "could not install pip==$PIP_VERSION into $venv (log: $pip_log)"; }
  # -c: every package of the closure at its locked version; extras dev (pytest) and
  # peers (heavyball).  bench (curvlinops, BackPACK) stays optional: .[bench].
  "$vpy" -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev,peers]" >> "$pip_log" 2>&1 \
    || { grep -v '^WARNING: Location' "$pip_log" | tail -n 20 >&2
         die "pip install -c requirements.lock -e .[dev,peers] failed (log: $pip_log)"; }
  echo "$repo" > "$stamp"
else
  log "python packages present in $venv"
fi

# checked from / so the source tree on the cwd cannot pass for an installed package
(cd / && "$vpy" "$repo/scripts/verify_install.py" --lock "$repo/requirements.lock") || exit 1
log "done: recipes use $venv (recipes/common/path.sh); tests: $vpy -m pytest -q tests"
