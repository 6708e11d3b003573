#!/usr/bin/env bash
# The papers' headline measurement on this corpus: wall time for HF with L-BFGS
# preconditioning and geometric sampling (and each acceleration alone) to reach
# baseline HF's final held-out cross-entropy, as a ratio measured in one run,
# plus the WER difference. Runs stages 8-10 for the HF variants only; earlier
# stages must be done (bash run.sh --stop-stage 7). Extra args go to run.sh.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../common/synth_recipe.sh --style bn --stage 8 --optimizers "hf hf_lbfgs hf_sampled hf_lbfgs_sampled" "$@"
