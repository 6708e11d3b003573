#!/usr/bin/env bash
# The papers' headline measurement on this corpus, at convergence: every HF variant
# trains until its stopping rule (trainer.convergence) fires, for each seed; then
# `asr-hf speedup` reports the time and work for HF with L-BFGS preconditioning and
# geometric sampling (and each acceleration alone) to reach baseline HF's converged
# held-out cross-entropy (per seed, median and range over seeds) and the WER
# differences with paired-bootstrap intervals.  Runs stages 8-10 for the HF variants;
# earlier stages must be done (bash run.sh --stop-stage 7).  Extra args go to run.sh,
# e.g. --seeds "0".
set -euo pipefail
cd "$(dirname "$0")"
bash ../common/synth_recipe.sh --style swb --stage 8 --seeds "0" \
  --optimizers "hf hf_lbfgs hf_sampled hf_lbfgs_sampled hf_kfac" "$@"
. ../common/path.sh
asr-hf speedup exp --baseline hf --candidates hf_lbfgs hf_sampled hf_lbfgs_sampled hf_kfac --out exp/speedup.md
