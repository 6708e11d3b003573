# Synthetic Switchboard-style corpus (8 kHz telephone band, mu-law, faster and noisier speech).
# Shared defaults: ../common/defaults.sh, then ../common/synth_defaults.sh (the decoder and
# acoustic-weight settings there were tuned on synth_bn and are not re-tuned here).
data_conf=synth_swb   # conf/data/
sample_rate=8000
# acoustic weights the GMM decoding sweeps on dev (it extends itself past an edge): telephone
# speech wants larger ones than synth_bn; on synth_swb small (seed 0, 2026-12-07) synth_bn's
# 0.04-0.08 extended itself twice for mono, tri1 and tri2, best at 0.107 each time
acwt_sweep_gmm="0.08,0.1,0.12"
