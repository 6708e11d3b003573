# Defaults shared by every recipe: the real-corpus (LDC) settings, Kaldi's.  A recipe sources
# this file, then (synthetic corpora only) synth_defaults.sh, then its corpus's conf.sh (the
# values that differ per corpus), then parse_options.sh (--foo-bar VALUE sets foo_bar;
# `run.sh --help` lists every option with its current value).
stage=0
stop_stage=100
jobs=""               # processes for synthesis/features/GMM/decoding (default: all cores)
lm_order=3
num_mel_bins=40
mono_totgauss=1000
gmm_systems="mono tri1 tri2 tri3"   # Kaldi's ladder; the last one aligns the DNNs' data, its graph decodes them
tri2_leaves=""        # tri2 = LDA+MLLT (Kaldi train_lda_mllt.sh) on tri1's alignments; empty: tri1's size
tri2_totgauss=""
tri3_leaves=""        # tri3 = SAT / fMLLR (train_sat.sh) on tri2's alignments; empty: tri1's size
tri3_totgauss=""
optimizers="sgd hf hf_lbfgs_sampled"
seeds="0"             # DNN training seeds (init, held-out split, HF samples); exp/dnn_<opt>[_s<seed>]
speed_perturb=""      # e.g. 0.9,1.0,1.1: the DNNs train on speed-perturbed copies, aligned by the last GMM (Kaldi nnet3), in exp/dnn_<opt>_sp
dnn_tag=""            # names the DNN runs exp/dnn_<opt>[_sp]_<tag>[_s<seed>], e.g. for another --model
dnn_feats=fbank       # DNN input: fbank (the papers' 40 log-mel) or gmm (the last GMM system's fMLLR features)
trainer=default       # conf/trainer/
train_overrides=""    # extra Hydra overrides for every DNN, e.g. "trainer.max_iters=30"
nproc=1               # DNN training processes per node (torchrun when > 1)
nnodes=1              # nodes of a multi-node DNN training job (needs --rdzv-endpoint)
rdzv_endpoint=""      # HOST:PORT of the torchrun rendezvous for --nnodes > 1
rdzv_id=0             # job id for the rendezvous (unique per concurrent job)
acwt_sweep_gmm="0.06,0.08,0.1,0.12"
decode_opts="--beam 13 --lattice-beam 8 --max-active 7000"  # Kaldi's decoder settings (asr-hf decode-gmm --help)
