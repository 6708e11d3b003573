#!/usr/bin/env bash
# Synthetic corpus recipe body: `synth_recipe.sh --style bn|swb [options] [-- hydra overrides]`.
# Used by recipes/synth_bn/run.sh and recipes/synth_swb/run.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

style=bn
stage=0
stop_stage=100
size=small            # tiny | small | medium | bn50 | swb300 (asr-hf corpus-sizes)
seed=0
jobs=""               # processes for synthesis/features/GMM/decoding (default: all cores)
lm_order=3
num_mel_bins=40
mono_totgauss=1000
tri_leaves=400
tri_totgauss=2500
tri2_leaves=500       # tri2 = LDA+MLLT (Kaldi train_lda_mllt.sh) on tri1's alignments
tri2_totgauss=3500
tri3_leaves=600       # tri3 = SAT / fMLLR (train_sat.sh) on tri2's alignments
tri3_totgauss=4500
gmm_systems="mono tri1 tri2 tri3"   # the last one aligns the DNN's training data, its graph decodes the DNNs
optimizers="sgd hf hf_lbfgs_sampled"
speed_perturb=""      # e.g. 0.9,1.0,1.1: Kaldi-style speed-perturbed training copies (stage 2)
seeds="0"            # DNN training seeds (init, held-out split, HF samples); exp/dnn_<opt>[_s<seed>]
dnn_feats=gmm        # DNN input: gmm = the last GMM system's (speaker-adapted) features, Kaldi nnet1 style; fbank = 40 log-mel
model=dnn_small       # conf/model/: dnn_small (CPU), dnn_bn50 / dnn_swb300 (papers, GPU)
trainer=cpu_demo      # conf/trainer/
train_overrides=""    # extra Hydra overrides for every DNN, e.g. "trainer.max_iters=30"
nproc=1               # DNN training processes per node (torchrun when > 1)
nnodes=1              # nodes of a multi-node DNN training job (needs --rdzv-endpoint)
rdzv_endpoint=""      # HOST:PORT of the torchrun rendezvous for --nnodes > 1
rdzv_id=0             # job id for the rendezvous (unique per concurrent job)
acwt_sweep_gmm="0.04,0.06,0.08"
# decoder settings (asr-hf decode-gmm --help); on 24 dev utterances of synth_bn small (tri1),
# beam 11 / max-active 2000 searched at RTF 0.22 and beam 10 / 1000 at 0.11 with the same WER
# (26.1 vs 25.3 %, within noise); beam 9 / 500 (RTF 0.06) lost 2.8 points to search errors
decode_opts="--beam 10 --lattice-beam 6 --max-active 1000"
acwt_sweep_dnn="0.1,0.15,0.2"  # synth_bn small SGD-DNN: best 0.167 (0.06 -> 51.1, 0.1 -> 39.1, 0.167 -> 36.8, 0.278 -> 42.0 % dev)

. "$here/parse_options.sh"
[ $# -gt 0 ] && train_overrides="$train_overrides $*"
data_conf="synth_$style"
case $style in
  bn) sample_rate=16000 ;;
  swb) sample_rate=8000 ;;
  *) echo "unknown style $style" >&2; exit 1 ;;
esac
. "$here/pipeline.sh"

mkdir -p data exp
{ echo "# $(date)"; echo "$0 --style $style --stage $stage --stop-stage $stop_stage --size $size --optimizers \"$optimizers\" --model $model --trainer $trainer $train_overrides"; } >> exp/commands.log

if want 0; then
  log "Stage 0: synthesize the $size $style corpus (seed $seed)"
  asr-hf synth --out data/corpus --style "$style" --size "$size" --seed "$seed" ${jobs:+--jobs $jobs}
fi

run_pipeline
