# Synthetic Switchboard-style corpus (8 kHz telephone band, mu-law, faster and noisier speech).
# Shared defaults: ../common/defaults.sh, then ../common/synth_defaults.sh (the decoder and
# acoustic-weight settings there were tuned on synth_bn and are not re-tuned here).
data_conf=synth_swb   # conf/data/
sample_rate=8000
