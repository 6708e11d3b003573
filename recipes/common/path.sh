# Sourced by every recipe (through pipeline.sh), like Kaldi's path.sh: puts asr_hf's
# virtual environment on PATH.  scripts/setup.sh creates it: .venv in the repo by
# default, or wherever ASR_HF_VENV points.  Without one, an asr-hf already on PATH
# (a user's own environment) is used as it is.
_asr_hf_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_asr_hf_venv=${ASR_HF_VENV:-$_asr_hf_repo/.venv}
if [ -x "$_asr_hf_venv/bin/asr-hf" ]; then
  export VIRTUAL_ENV="$_asr_hf_venv"
  export PATH="$_asr_hf_venv/bin:$PATH"
elif ! command -v asr-hf >/dev/null 2>&1; then
  echo "asr_hf is not set up: no $_asr_hf_venv/bin/asr-hf and no asr-hf on PATH; run: bash scripts/setup.sh" >&2
  exit 1
fi
unset _asr_hf_repo _asr_hf_venv
