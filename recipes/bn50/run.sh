#!/usr/bin/env bash
# 1997 Hub4 English Broadcast News (BN-50 setting of Sainath et al. 2013).
#   bash run.sh --bn-audio /data/LDC98S71 --bn-transcripts /data/LDC98T28 [--eval97 /data/LDC2002S11] \
#               [--stage N] [--stop-stage M] [--optimizers "sgd hf hf_lbfgs_sampled"] [-- hydra overrides]
# Defaults are the papers' system sizes: ~2.2k tied states, 6 x 1024 sigmoid DNN on 40 log-mel x 9 frames.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)/../common

bn_audio=""
bn_transcripts=""
eval97=""
stage=0
stop_stage=100
jobs=""
lm_order=3
num_mel_bins=40
mono_totgauss=1000
tri_leaves=2200
tri_totgauss=50000
tri2_leaves=""        # tri2 = LDA+MLLT, tri3 = SAT (fMLLR); empty: tri1's sizes
tri2_totgauss=""
tri3_leaves=""
tri3_totgauss=""
gmm_systems="mono tri1 tri2 tri3"   # Kaldi's ladder; the last one aligns and decodes the DNNs
optimizers="sgd hf hf_lbfgs_sampled"
seeds="0"            # DNN training seeds (init, held-out split, HF samples); exp/dnn_<opt>[_s<seed>]
dnn_feats=fbank        # DNN input: fbank (the papers' log-mel) or gmm (the last GMM system's fMLLR features)
model=dnn_bn50
trainer=default
train_overrides=""
nproc=1               # DNN training processes per node (torchrun when > 1)
nnodes=1              # nodes of a multi-node DNN training job (needs --rdzv-endpoint)
rdzv_endpoint=""      # HOST:PORT of the torchrun rendezvous for --nnodes > 1
rdzv_id=0             # job id for the rendezvous (unique per concurrent job)
acwt_sweep_gmm="0.06,0.08,0.1,0.12"
decode_opts="--beam 13 --lattice-beam 8 --max-active 7000"  # decoder settings (asr-hf decode-gmm --help)
acwt_sweep_dnn="0.06,0.08,0.1,0.12,0.15"

. "$here/parse_options.sh"
[ $# -gt 0 ] && train_overrides="$train_overrides $*"
data_conf=bn50
sample_rate=16000
. "$here/pipeline.sh"
mkdir -p data exp
echo "# $(date) $0 $*" >> exp/commands.log

if want 0; then
  log "Stage 0: prepare LDC Broadcast News manifests and per-utterance cuts"
  if [ -z "$bn_audio" ] || [ -z "$bn_transcripts" ]; then
    echo "$0: --bn-audio and --bn-transcripts are required for stage 0" >&2; exit 1
  fi
  asr-hf prepare-bn --audio-dir "$bn_audio" --transcripts-dir "$bn_transcripts" \
    ${eval97:+--eval97-dir "$eval97"} --out data/manifests
  asr-hf make-cuts --manifests data/manifests --out data/corpus
fi

run_pipeline
