"""Decoding graphs, lattice-faster decoding, scoring and WER reports.

Pipeline (each step also an ``asr-hf`` subcommand, see :mod:`asr_hf.decode.cli`)::

    mkgraph(lang_dir, "exp/tri1")                      # exp/tri1/graph: HCLG.fst, words.txt, tid2pdf.int, ...
    decode_gmm("exp/tri1", cuts_dev, "dev", acwts=DEFAULT_ACWT_SWEEP)     # exp/tri1/decode_dev
    decode_gmm("exp/tri1", cuts_test, "test", config=DecodeConfig(acwt=acwt_from("exp/tri1/decode_dev")))
    decode_matrices(graph_dir, [(utt_id, loglikes)], DecodeConfig(), log_priors)  # any model
    compare_table(collect_results("exp"))

Modules:

* :mod:`~asr_hf.decode.graph` -- HCLG after Kaldi's ``mkgraph.sh`` (graph dir layout).
* :mod:`~asr_hf.decode.decoder` -- priors, pdf -> transition-id scores, parallel
  lattice-faster decoding of ``(T, num_pdfs)`` matrices.
* :mod:`~asr_hf.decode.pipeline` -- decode + score a set, acoustic-weight sweep on
  dev applied to test.
* :mod:`~asr_hf.decode.gmm_decode` -- GMM systems through the same decoder.
* :mod:`~asr_hf.decode.scoring` -- WER/SER with jiwer, Kaldi ``per_utt`` alignments,
  per-speaker counts.
* :mod:`~asr_hf.decode.report` -- decode dirs (``wer.json``, ``summary.txt``) and the
  ``compare`` table / bar chart; defines ``exp/<system>/train_summary.json``.
* :mod:`~asr_hf.decode.interop` -- Kaldi ark/scp export for ``latgen-faster-mapped``.
"""

from asr_hf.decode.decoder import (
    DecodeConfig,
    Hypothesis,
    decode_hypotheses,
    decode_matrices,
    priors_from_counts,
    pseudo_loglikes,
)
from asr_hf.decode.graph import GraphConfig, make_graph, mkgraph
from asr_hf.decode.pipeline import DEFAULT_ACWT_SWEEP, EvalSet, acwt_from, decode_and_score, tune_and_test
from asr_hf.decode.report import collect_results, compare_table, plot_results
from asr_hf.decode.scoring import ErrorCounts, ScoreResult, score

__all__ = [
    "DEFAULT_ACWT_SWEEP",
    "DecodeConfig",
    "ErrorCounts",
    "EvalSet",
    "GraphConfig",
    "Hypothesis",
    "ScoreResult",
    "acwt_from",
    "collect_results",
    "compare_table",
    "decode_and_score",
    "decode_hypotheses",
    "decode_matrices",
    "make_graph",
    "mkgraph",
    "plot_results",
    "priors_from_counts",
    "pseudo_loglikes",
    "score",
    "tune_and_test",
]
