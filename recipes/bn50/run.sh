#!/usr/bin/env bash
# 1997 Hub4 English Broadcast News (BN-50 setting of Sainath et al. 2013).
#   bash run.sh --bn-audio /data/LDC98S71 --bn-transcripts /data/LDC98T28 [--eval97 /data/LDC2002S11] \
#               [--stage N] [--stop-stage M] [--optimizers "sgd hf hf_lbfgs_sampled"] [-- hydra overrides]
# Defaults: ../common/defaults.sh, then this corpus's conf.sh (`bash run.sh --help` lists them).
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)/../common

. "$here/defaults.sh"
. ./conf.sh
option_files="$here/defaults.sh conf.sh"
. "$here/parse_options.sh"
[ $# -gt 0 ] && train_overrides="$train_overrides $*"
. "$here/pipeline.sh"
mkdir -p data exp
echo "# $(date) $0 $*" >> exp/commands.log

if want 0; then
  log "Stage 0: prepare LDC Broadcast News manifests and per-utterance cuts"
  if [ -z "$bn_audio" ] || [ -z "$bn_transcripts" ]; then
    echo "$0: --bn-audio and --bn-transcripts are required for stage 0" >&2; exit 1
  fi
  asr-hf prepare-bn --audio-dir "$bn_audio" --transcripts-dir "$bn_transcripts" \
    ${eval97:+--eval97-dir "$eval97"} --dev-fraction "$bn_dev_fraction" --out data/manifests
  asr-hf make-cuts --manifests data/manifests --out data/corpus
fi

run_pipeline
