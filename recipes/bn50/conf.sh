# 1997 Hub4 English Broadcast News (BN-50): the papers' system sizes, ~2.2k tied states and a
# 6 x 1024 sigmoid DNN on 40 log-mel x 9 frames.  Shared defaults: ../common/defaults.sh.
bn_audio=""           # stage 0 inputs: LDC98S71 (audio), LDC98T28 (transcripts), LDC2002S11 (eval97, optional)
bn_transcripts=""
eval97=""
bn_dev_fraction=0.02  # share of the training speaker names held out for dev (prepare-bn --dev-fraction)
data_conf=bn50        # conf/data/
sample_rate=16000
tri_leaves=2200
tri_totgauss=50000
model=dnn_bn50
acwt_sweep_dnn="0.06,0.08,0.1,0.12,0.15"
