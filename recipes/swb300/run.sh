#!/usr/bin/env bash
# Switchboard-1 (SWB-300 setting of Sainath et al. 2013), eval2000 as test.
#   bash run.sh --swbd-audio /data/LDC97S62 --swbd-transcripts /data/swb_ms98_transcriptions \
#               [--eval2000-audio /data/LDC2002S09 --eval2000-transcripts /data/LDC2002T43] \
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
  log "Stage 0: prepare LDC Switchboard manifests and per-utterance cuts"
  if [ -z "$swbd_audio" ] || [ -z "$swbd_transcripts" ]; then
    echo "$0: --swbd-audio and --swbd-transcripts are required for stage 0" >&2; exit 1
  fi
  asr-hf prepare-swbd --audio-dir "$swbd_audio" --transcripts-dir "$swbd_transcripts" \
    --dev-utterances "$swbd_dev_utterances" \
    ${eval2000_audio:+--eval2000-audio-dir "$eval2000_audio"} \
    ${eval2000_transcripts:+--eval2000-transcripts-dir "$eval2000_transcripts"} --out data/manifests
  asr-hf make-cuts --manifests data/manifests --out data/corpus
fi

run_pipeline
