# Defaults of the synthetic corpora (synth_bn, synth_swb), over defaults.sh: sizes chosen so
# the main job (stages 0-10, small) finishes within an hour on a 2-core CPU.  Each corpus's
# conf.sh then sets what is its own (name, sample rate).
size=small            # tiny | small | medium | bn50 | swb300 (asr-hf corpus-sizes)
seed=0                # corpus synthesis seed
tri_leaves=400
tri_totgauss=2500
tri2_leaves=500
tri2_totgauss=3500
tri3_leaves=600
tri3_totgauss=4500
dnn_feats=gmm         # the last GMM system's speaker-adapted (fMLLR) features, Kaldi nnet1 style
model=dnn_small       # conf/model/: dnn_small (CPU), dnn_bn50 / dnn_swb300 (papers, GPU)
trainer=cpu_demo
# on 24 dev utterances of synth_bn small (tri1), beam 11 / max-active 2000 searched at RTF 0.22
# and beam 10 / 1000 at 0.11 with the same WER (26.1 vs 25.3 %, within noise); beam 9 / 500
# (RTF 0.06) lost 2.8 points to search errors
decode_opts="--beam 10 --lattice-beam 6 --max-active 1000"
# synth_bn small SGD-DNN: best 0.167 (0.06 -> 51.1, 0.1 -> 39.1, 0.167 -> 36.8, 0.278 -> 42.0 % dev)
acwt_sweep_dnn="0.1,0.15,0.2"
