#!/usr/bin/env bash
# The synthetic recipes' best DNN, chosen on dev: `best_dnn.sh --style bn|swb [options]`, from the
# recipe dir (recipes/synth_<style>/best_dnn.sh). Speed-perturbed training copies (0.9, 1.0, 1.1;
# Kaldi nnet3), aligned and fMLLR-adapted by tri3, and a 4x512 ReLU net (conf/model/
# dnn_relu_4x512.yaml) trained by SGD-newbob at lr 0.05, in exp/dnn_sgd_sp_4x512_relu; then
# RESULTS.md again. Stages 0-7 must be done (bash run.sh). Further options go to the DNN
# stages, e.g. --seeds "0 1".
set -euo pipefail
if [ "${1:-}" != --style ] || [ $# -lt 2 ]; then
  echo "usage: best_dnn.sh --style bn|swb [recipe options for stages 8-10]" >&2; exit 1
fi
style=$2; shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sp=(--speed-perturb 0.9,1.0,1.1)
# stages 2 and 5 add the perturbed copies' features, alignments and adapted features
bash "$here/synth_recipe.sh" --style "$style" --stage 2 --stop-stage 2 "${sp[@]}"
bash "$here/synth_recipe.sh" --style "$style" --stage 5 --stop-stage 5 "${sp[@]}"
bash "$here/synth_recipe.sh" --style "$style" --stage 8 --stop-stage 10 "${sp[@]}" --optimizers sgd \
  --model dnn_relu_4x512 --dnn-tag 4x512_relu "$@" -- optim.options.lr=0.05
