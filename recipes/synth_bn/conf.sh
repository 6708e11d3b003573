# Synthetic Broadcast-News-style corpus (16 kHz wideband, broadcast-like channels).
# Shared defaults: ../common/defaults.sh, then ../common/synth_defaults.sh.
data_conf=synth_bn    # conf/data/
sample_rate=16000
