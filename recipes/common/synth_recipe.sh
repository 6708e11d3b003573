#!/usr/bin/env bash
# Synthetic corpus recipe body: `synth_recipe.sh --style bn|swb [options] [-- hydra overrides]`.
# Used by recipes/synth_bn/run.sh and recipes/synth_swb/run.sh, from the recipe dir.
# Defaults: defaults.sh and synth_defaults.sh here, then recipes/synth_<style>/conf.sh
# (`--help` lists them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

style=bn  # read before the other options: it picks the corpus's conf.sh
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --style) style=${args[i + 1]:-} ;;
    --style=*) style=${args[i]#--style=} ;;
    --) break ;;
  esac
done
case $style in
  bn|swb) ;;
  *) echo "unknown style '$style' (bn or swb)" >&2; exit 1 ;;
esac
. "$here/defaults.sh"
. "$here/synth_defaults.sh"
conf=$here/../synth_$style/conf.sh
. "$conf"
option_files="$here/defaults.sh $here/synth_defaults.sh $conf"
. "$here/parse_options.sh"
[ $# -gt 0 ] && train_overrides="$train_overrides $*"
. "$here/pipeline.sh"

mkdir -p data exp
{ echo "# $(date)"; echo "$0 --style $style --stage $stage --stop-stage $stop_stage --size $size --optimizers \"$optimizers\" --seeds \"$seeds\"${speed_perturb:+ --speed-perturb $speed_perturb}${dnn_tag:+ --dnn-tag $dnn_tag} --model $model --trainer $trainer $train_overrides"; } >> exp/commands.log

if want 0; then
  log "Stage 0: synthesize the $size $style corpus (seed $seed)"
  asr-hf synth --out data/corpus --style "$style" --size "$size" --seed "$seed" ${jobs:+--jobs $jobs}
fi

run_pipeline
