#!/usr/bin/env bash
# Synthetic Switchboard-style (8 kHz telephone) recipe, end to end:
# corpus synthesis -> lang/LM -> features -> mono -> tri -> alignments -> graphs
# -> GMM decode -> DNN training per optimizer -> DNN decode -> RESULTS.md.
#   bash run.sh [--stage N] [--stop-stage M] [--size small] [--optimizers "sgd hf"] [-- hydra overrides]
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../common/synth_recipe.sh --style swb "$@"
