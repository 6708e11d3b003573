# Switchboard-1 (SWB-300), eval2000 as test: the papers' system sizes, ~9.3k tied states and a
# 6 x 2048 sigmoid DNN on 40 log-mel x 11 frames.  Shared defaults: ../common/defaults.sh.
swbd_audio=""         # stage 0 inputs: LDC97S62, the ms98 transcriptions, LDC2002S09 / LDC2002T43 (eval2000)
swbd_transcripts=""
eval2000_audio=""
eval2000_transcripts=""
swbd_dev_utterances=4000  # dev: the first conversations up to this many utterances (Kaldi's train_dev)
data_conf=swb300      # conf/data/
sample_rate=8000
tri_leaves=9300
tri_totgauss=150000
model=dnn_swb300
acwt_sweep_dnn="0.06,0.0833,0.1,0.12"  # 0.0833: Kaldi swbd nnet1's acwt
