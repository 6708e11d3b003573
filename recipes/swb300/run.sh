#!/usr/bin/env bash
# Switchboard-1 (SWB-300 setting of Sainath et al. 2013), eval2000 as test.
#   bash run.sh --swbd-audio /data/LDC97S62 --swbd-transcripts /data/swb_ms98_transcriptions \
#               [--eval2000-audio /data/LDC2002S09 --eval2000-transcripts /data/LDC2002T43] \
#               [--stage N] [--stop-stage M] [--optimizers "sgd hf hf_lbfgs_sampled"] [-- hydra overrides]
# Defaults are the papers' system sizes: ~9.3k tied states, 6 x 2048 sigmoid DNN on 40 log-mel x 11 frames.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)/../common

swbd_audio=""
swbd_transcripts=""
eval2000_audio=""
eval2000_transcripts=""
stage=0
stop_stage=100
jobs=""
lm_order=3
num_mel_bins=40
mono_totgauss=1000
tri_leaves=9300
tri_totgauss=150000
tri2_leaves=""        # tri2 = LDA+MLLT, tri3 = SAT (fMLLR); empty: tri1's sizes
tri2_totgauss=""
tri3_leaves=""
tri3_totgauss=""
gmm_systems="mono tri1 tri2 tri3"   # Kaldi's ladder; the last one aligns and decodes the DNNs
optimizers="sgd hf hf_lbfgs_sampled"
seeds="0"            # DNN training seeds (init, held-out split, HF samples); exp/dnn_<opt>[_s<seed>]
dnn_feats=fbank        # DNN input: fbank (the papers' log-mel) or gmm (the last GMM system's fMLLR features)
model=dnn_swb300
trainer=default
train_overrides=""
nproc=1               # DNN training processes per node (torchrun when > 1)
nnodes=1              # nodes of a multi-node DNN training job (needs --rdzv-endpoint)
rdzv_endpoint=""      # HOST:PORT of the torchrun rendezvous for --nnodes > 1
rdzv_id=0             # job id for the rendezvous (unique per concurrent job)
acwt_sweep_gmm="0.06,0.08,0.1,0.12"
decode_opts="--beam 13 --lattice-beam 8 --max-active 7000"  # decoder settings (asr-hf decode-gmm --help)
acwt_sweep_dnn="0.06,0.0833,0.1,0.12"

. "$here/parse_options.sh"
[ $# -gt 0 ] && train_overrides="$train_overrides $*"
data_conf=swb300
sample_rate=8000
. "$here/pipeline.sh"
mkdir -p data exp
echo "# $(date) $0 $*" >> exp/commands.log

if want 0; then
  log "Stage 0: prepare LDC Switchboard manifests and per-utterance cuts"
  if [ -z "$swbd_audio" ] || [ -z "$swbd_transcripts" ]; then
    echo "$0: --swbd-audio and --swbd-transcripts are required for stage 0" >&2; exit 1
  fi
  asr-hf prepare-swbd --audio-dir "$swbd_audio" --transcripts-dir "$swbd_transcripts" \
    ${eval2000_audio:+--eval2000-audio-dir "$eval2000_audio"} \
    ${eval2000_transcripts:+--eval2000-transcripts-dir "$eval2000_transcripts"} --out data/manifests
  asr-hf make-cuts --manifests data/manifests --out data/corpus
fi

run_pipeline
