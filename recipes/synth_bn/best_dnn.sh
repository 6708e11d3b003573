#!/usr/bin/env bash
# The best DNN on dev (recipes/common/best_dnn.sh): speed-perturbed data, 4x512 ReLU, SGD-newbob,
# in exp/dnn_sgd_sp_4x512_relu; then RESULTS.md. Run after run.sh.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../common/best_dnn.sh --style bn "$@"
