# Synthetic Broadcast-News-style corpus (16 kHz wideband, broadcast-like channels).
# Shared defaults: ../common/defaults.sh, then ../common/synth_defaults.sh.
data_conf=synth_bn    # conf/data/
sample_rate=16000
# acoustic weights the GMM decoding sweeps on dev (it extends itself past an edge); synth_bn
# small's mono..tri3 were best at 0.06-0.08 (seed 0, 2026-12-07)
acwt_sweep_gmm="0.04,0.06,0.08"
