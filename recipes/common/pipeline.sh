# The hybrid DNN-HMM pipeline after data preparation, shared by every recipe.
# Sourced by recipes/<corpus>/run.sh, which sets the variables below, prepares
# data/corpus (stage 0) and then calls `run_pipeline`.
#
#   1 lang + LM   2 features   3 mono   4 tri1 (+ tri2 LDA+MLLT, tri3 SAT)   5 alignments
#   6 graphs      7 GMM decode 8 DNN training (one per optimizer)
#   9 DNN decode  10 report (RESULTS.md)
#
# Every stage is one call into the package; outputs are written atomically, and each
# command skips itself on re-run when its output is current (made by the same request,
# newer than its inputs; `--force` redoes it), so the recipe itself keeps no skip logic.

. "$(dirname "${BASH_SOURCE[0]}")/path.sh"

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# stage names for exp/stage_times.tsv (asr-hf compare prints the wall time per stage)
declare -A STAGE_NAMES=([0]="data preparation" [1]="lang dir, LM, G" [2]="features" [3]="monophone GMM"
  [4]="triphone GMMs" [5]="alignments" [6]="decoding graphs" [7]="GMM decoding" [8]="DNN training"
  [9]="DNN decoding" [10]="report")
_stage_open="" _stage_t0=0
# close the running stage's timing: one line "start end stage name" in exp/stage_times.tsv
stage_time_close() {
  if [ -n "$_stage_open" ]; then
    mkdir -p exp
    printf '%s\t%s\t%s\t%s\n' "$_stage_t0" "$(date +%s)" "$_stage_open" "${STAGE_NAMES[$_stage_open]:-}" >> exp/stage_times.tsv
  fi
  _stage_open=""
}
# want N: is stage N selected? If so, its wall time starts counting (and the previous one's ends)
want() {
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ] || return 1
  stage_time_close
  _stage_open=$1 _stage_t0=$(date +%s)
}

# DNN training in one process, or data-parallel under torchrun with the same Hydra
# config: --nproc N processes per node (GPUs, or CPU gloo workers); --nnodes M with
# --rdzv-endpoint HOST:PORT for multi-node jobs (run the recipe's stage 8 on every
# node with the same options and a shared exp dir; rank 0 writes the outputs).
train_am() {
  if [ "${nproc:-1}" -le 1 ] && [ "${nnodes:-1}" -le 1 ]; then
    asr-hf train-am "$@"
  elif [ "${nnodes:-1}" -le 1 ]; then
    torchrun --standalone --nproc-per-node "$nproc" --no-python asr-hf train-am "$@"
  else
    if [ -z "${rdzv_endpoint:-}" ]; then
      echo "--nnodes $nnodes needs --rdzv-endpoint HOST:PORT (a host every node can reach)" >&2; return 1
    fi
    torchrun --nnodes "$nnodes" --nproc-per-node "${nproc:-1}" --rdzv-backend c10d \
      --rdzv-endpoint "$rdzv_endpoint" --rdzv-id "asr_hf_${PWD##*/}_${rdzv_id:-0}" --no-python asr-hf train-am "$@"
  fi
}

# the GMM system whose alignments (and tree, and graph) the DNNs use: the last of gmm_systems
# ("mono tri1", "mono tri1 tri2" or "mono tri1 tri2 tri3")
ali_system() { echo "${gmm_systems##* }"; }
# --speed-perturb F1,F2,... (Kaldi nnet3's run_ivector_common.sh): the GMMs train on the
# original data; stage 2 also makes features of speed-perturbed training copies (sp<f>-<utt>,
# new speakers), the last GMM aligns them in stage 5 (align_fmllr.sh for a SAT system: their
# speakers' fMLLR transforms are estimated), and the DNNs train on them; dev/test are unperturbed
sp=""
[ -n "${speed_perturb:-}" ] && sp=_sp
# the alignments stage 5 writes and stage 8 trains on: one variable, so the two cannot drift
ali_dir=exp/$(ali_system)/ali$sp
# the DNN's input features: dnn_feats=fbank (log-mel, data/fbank) or gmm (Kaldi nnet1's
# make_fmllr_feats.sh: the alignment system's own input features, speaker-adapted by fMLLR
# for a SAT system; written to data/gmmfeats_<system> by stages 5 and 9); the training
# features (dnn_train_feats_dir) are the speed-perturbed ones with --speed-perturb
case "${dnn_feats:-fbank}" in
  fbank) dnn_feats_dir=data/fbank ;;
  gmm) dnn_feats_dir=data/gmmfeats_$(ali_system) ;;
  *) echo "dnn_feats must be fbank or gmm, got '$dnn_feats'" >&2; exit 1 ;;
esac
dnn_train_feats_dir=$dnn_feats_dir$sp

# exp dir name of a DNN run: dnn_<optimizer>[_sp][_<dnn_tag>] for seed 0, with _s<seed> after
# it otherwise. _sp marks speed-perturbed training data (Kaldi's exp/nnet3/tdnn_sp) and
# --dnn-tag another model or setting, so neither overwrites the default DNNs; asr-hf speedup
# pairs each candidate seed with the baseline run of the same seed (and data and model)
if [ -n "${dnn_tag:-}" ] && { [[ ! $dnn_tag =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || [[ $dnn_tag =~ (^|_)s[0-9]+$ ]]; }; then
  echo "--dnn-tag '$dnn_tag': letters, digits, '.', '-' and '_', starting with a letter or digit," \
    "and not ending in s<digits> (that names a seed)" >&2
  exit 1
fi
dnn_suffix=$sp${dnn_tag:+_$dnn_tag}
dnn_name() { if [ "$2" = 0 ]; then echo "dnn_$1$dnn_suffix"; else echo "dnn_$1${dnn_suffix}_s$2"; fi; }

run_pipeline() {
  local jobs_opt=""
  [ -n "$jobs" ] && jobs_opt="--jobs $jobs"

  if want 1; then
    log "Stage 1: lang dir, ${lm_order}-gram LM, G.fst"
    asr-hf corpus-text --corpus data/corpus --split dev --out data/local/text_dev.txt
    asr-hf prepare-lang data/lang --text data/corpus/lm_text.txt
    asr-hf train-lm --text data/corpus/lm_text.txt --order "$lm_order" --lang data/lang \
      --dev data/local/text_dev.txt --out data/local/lm/lm.arpa --report data/local/lm/dev_report.json
    asr-hf make-g --arpa data/local/lm/lm.arpa --lang data/lang
  fi

  if want 2; then
    log "Stage 2: features (fbank ${num_mel_bins} for the DNN, MFCC for the GMMs)${speed_perturb:+; DNN training copies speed-perturbed $speed_perturb}"
    asr-hf features --corpus data/corpus --out data/fbank --kind fbank --num-mel-bins "$num_mel_bins" \
      --sampling-rate "$sample_rate" $jobs_opt
    asr-hf features --corpus data/corpus --out data/mfcc --kind mfcc --sampling-rate "$sample_rate" $jobs_opt
    if [ -n "$sp" ]; then
      # the alignment system reads MFCC; a fbank DNN also needs the copies' fbank
      asr-hf features --corpus data/corpus --out data/mfcc_sp --kind mfcc --sampling-rate "$sample_rate" \
        --splits train --speed-perturb "$speed_perturb" $jobs_opt
      [ "${dnn_feats:-fbank}" = fbank ] && asr-hf features --corpus data/corpus --out data/fbank_sp --kind fbank \
        --num-mel-bins "$num_mel_bins" --sampling-rate "$sample_rate" --splits train --speed-perturb "$speed_perturb" $jobs_opt
    fi
  fi

  if want 3; then
    log "Stage 3: monophone GMM-HMM (flat start)"
    # train-mono / train-tri skip a directory whose .done marker (written last) exists; final.mdl
    # alone is not completion (it is written before the final alignment)
    asr-hf train-mono data/mfcc/cuts_train.jsonl.gz data/lang exp/mono \
      --totgauss "$mono_totgauss" $jobs_opt
  fi

  if want 4; then
    log "Stage 4: tied-triphone GMM-HMM (decision tree, $tri_leaves leaves)"
    asr-hf train-tri data/mfcc/cuts_train.jsonl.gz data/lang exp/mono exp/tri1 \
      --num-leaves "$tri_leaves" --totgauss "$tri_totgauss" $jobs_opt
    case " $gmm_systems " in *" tri2 "*)
      log "Stage 4: tri2 = LDA+MLLT on tri1's alignments (${tri2_leaves:-$tri_leaves} leaves)"
      asr-hf train-lda-mllt data/mfcc/cuts_train.jsonl.gz data/lang exp/tri1 exp/tri2 \
        --num-leaves "${tri2_leaves:-$tri_leaves}" --totgauss "${tri2_totgauss:-$tri_totgauss}" $jobs_opt ;;
    esac
    case " $gmm_systems " in *" tri3 "*)
      log "Stage 4: tri3 = SAT (fMLLR) on tri2's alignments (${tri3_leaves:-$tri_leaves} leaves)"
      asr-hf train-sat data/mfcc/cuts_train.jsonl.gz data/lang exp/tri2 exp/tri3 \
        --num-leaves "${tri3_leaves:-$tri_leaves}" --totgauss "${tri3_totgauss:-$tri_totgauss}" $jobs_opt ;;
    esac
  fi

  if want 5; then
    log "Stage 5: frame alignments (DNN targets) with $(ali_system)${sp:+ of the speed-perturbed training copies}"
    asr-hf align "data/mfcc$sp/cuts_train.jsonl.gz" data/lang "exp/$(ali_system)" --out "$ali_dir" $jobs_opt
    if [ "${dnn_feats:-fbank}" = gmm ]; then
      log "Stage 5: the DNN's training features: exp/$(ali_system)'s adapted features -> $dnn_train_feats_dir"
      # the copies' speakers have the transforms their alignment estimated (SAT systems)
      local trans_opt=""
      [ -n "$sp" ] && [ -f "$ali_dir/trans_train.npz" ] && trans_opt="--trans $ali_dir/trans_train.npz"
      asr-hf dump-gmm-feats "exp/$(ali_system)" "data/mfcc$sp/cuts_train.jsonl.gz" --out "$dnn_train_feats_dir" \
        --split train $trans_opt
    fi
  fi

  if want 6; then
    log "Stage 6: decoding graphs (HCLG)"
    for sys in $gmm_systems; do
      asr-hf mkgraph data/lang "exp/$sys"
    done
  fi

  if want 7; then
    log "Stage 7: GMM decoding ($gmm_systems)"
    for sys in $gmm_systems; do
      asr-hf decode-gmm "exp/$sys" data/mfcc/cuts_dev.jsonl.gz \
        --sweep "$acwt_sweep_gmm" $decode_opts $jobs_opt
      asr-hf decode-gmm "exp/$sys" data/mfcc/cuts_test.jsonl.gz \
        --acwt-from "exp/$sys/decode_dev" $decode_opts $jobs_opt
    done
  fi

  if want 8; then
    for opt in $optimizers; do
      for seed in $seeds; do
        local name; name=$(dnn_name "$opt" "$seed")
        local seed_opt=""  # the HF family draws its gradient/curvature samples with its own seed
        case $opt in hf*) seed_opt="++optim.options.seed=$seed" ;; esac
        log "Stage 8: DNN training with optimizer=$opt seed=$seed -> exp/$name"
        # skips a finished run of the same config; resumes a killed one (trainer.resume)
        train_am --root . \
          data="$data_conf" model="$model" trainer="$trainer" optim="$opt" \
          data.ali_dir="$ali_dir" data.feats_dir="$dnn_train_feats_dir" trainer.exp_dir="exp/$name" trainer.seed="$seed" $seed_opt $train_overrides
      done
    done
  fi

  if want 9; then
    for opt in $optimizers; do
      for seed in $seeds; do
        local name; name=$(dnn_name "$opt" "$seed")
        # the DNN's outputs are the pdfs of the alignment system's tree: decode with its graph
        local graph="exp/$(ali_system)/graph"
        log "Stage 9: DNN decoding (exp/$name) with $graph"
        for set in dev test; do
          # a SAT system's dev/test transforms come from its first-pass decode (stage 7)
          [ "${dnn_feats:-fbank}" = gmm ] && asr-hf dump-gmm-feats "exp/$(ali_system)" \
            "data/mfcc/cuts_$set.jsonl.gz" --out "$dnn_feats_dir" --split "$set"
          asr-hf nnet-forward --model "exp/$name/final.pt" \
            --cuts "$dnn_feats_dir/cuts_$set.jsonl.gz" --ark "exp/$name/loglikes_$set.ark"
        done
        asr-hf decode-matrices "$graph" \
          "exp/$name/loglikes_dev.ark" "exp/$name/decode_dev" \
          --cuts "$dnn_feats_dir/cuts_dev.jsonl.gz" --sweep "$acwt_sweep_dnn" $decode_opts $jobs_opt
        asr-hf decode-matrices "$graph" \
          "exp/$name/loglikes_test.ark" "exp/$name/decode_test" \
          --cuts "$dnn_feats_dir/cuts_test.jsonl.gz" --acwt-from "exp/$name/decode_dev" $decode_opts $jobs_opt
      done
    done
  fi

  if want 10; then
    log "Stage 10: report"
    # RESULTS.md comes whole from asr-hf compare: WER table with bootstrap intervals, paired
    # differences, the papers' HF speed-up (if HF variants ran) and the commands
    asr-hf compare exp --title "Results: ${data_conf} (${size:-full} corpus)" --out RESULTS.md --plot exp/wer.png --curves exp/heldout_vs_time.png
    log "results in $(pwd)/RESULTS.md"
  fi
  stage_time_close
}
