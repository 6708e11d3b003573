"""Bootstrap WER intervals and paired-bootstrap differences (Bisani & Ney 2004)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from asr_hf.decode.report import collect_results, paired_table, results_markdown
from asr_hf.decode.scoring import write_text
from asr_hf.decode.significance import UtteranceErrors, bootstrap_wer_ci, paired_bootstrap, utterance_errors


def _decode_dir(root, system, dset, refs, hyps):
    d = root / system / f"decode_{dset}"
    d.mkdir(parents=True)
    write_text(refs, d / "ref.txt")
    write_text(hyps, d / "hyp.txt")
    errs = utterance_errors(d)
    (d / "wer.json").write_text(json.dumps({"wer_percent": errs.wer, "ref_words": int(errs.words.sum())}))
    return d


def _corpus(n_utts=400, words=10, seed=0):
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(50)]
    return {f"u{i:04d}": list(rng.choice(vocab, words)) for i in range(n_utts)}


def _corrupt(refs, rate, seed):
    rng = np.random.default_rng(seed)
    return {u: [w if rng.random() > rate else "zzz" for w in ws] for u, ws in refs.items()}


def test_utterance_errors_and_ci_brackets_the_wer(tmp_path):
    refs = _corpus()
    d = _decode_dir(tmp_path, "sys", "test", refs, _corrupt(refs, 0.2, 1))
    ue = utterance_errors(d)
    assert len(ue.ids) == 400 and int(ue.words.sum()) == 4000
    lo, hi = bootstrap_wer_ci(ue)
    assert lo < ue.wer < hi
    # the bootstrap's width matches the delta-method standard error of a ratio estimator
    # (U utterances, errors e_u, words n_u): se = sqrt(sum (e_u - W n_u)^2) / sum n_u
    w = ue.errors.sum() / ue.words.sum()
    se = 100 * math.sqrt(float(((ue.errors - w * ue.words) ** 2).sum())) / ue.words.sum()
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_paired_bootstrap_identical_and_different_systems(tmp_path):
    refs = _corpus()
    hyp_a = _corrupt(refs, 0.2, 1)
    a = utterance_errors(_decode_dir(tmp_path, "a", "test", refs, hyp_a))
    same = paired_bootstrap(a, a)
    assert same.diff == 0 and same.ci == (0.0, 0.0)
    b = utterance_errors(_decode_dir(tmp_path, "b", "test", refs, _corrupt(refs, 0.1, 2)))
    d = paired_bootstrap(a, b)
    assert d.diff == pytest.approx(b.wer - a.wer)
    assert d.ci[1] < 0 and d.p_improve == 1.0  # b is clearly better
    # pairing narrows the interval: most of the utterance-to-utterance variance is shared
    c_hyp = {u: (ws[:-1] + ["zzz"]) if i % 10 == 0 else ws for i, (u, ws) in enumerate(hyp_a.items())}
    c = utterance_errors(_decode_dir(tmp_path, "c", "test", refs, c_hyp))
    dc = paired_bootstrap(a, c)
    lo_a, hi_a = bootstrap_wer_ci(a)
    assert dc.ci[1] - dc.ci[0] < (hi_a - lo_a) / 3


def test_paired_bootstrap_refuses_unrelated_sets():
    a = UtteranceErrors(("x",), np.array([1]), np.array([3]))
    b = UtteranceErrors(("y",), np.array([1]), np.array([3]))
    with pytest.raises(Exception, match="share no utterance"):
        paired_bootstrap(a, b)
    c = UtteranceErrors(("x",), np.array([1]), np.array([4]))
    with pytest.raises(Exception, match="different references"):
        paired_bootstrap(a, c)


def test_report_has_intervals_and_paired_section(tmp_path):
    refs = _corpus(200)
    _decode_dir(tmp_path, "tri1", "test", refs, _corrupt(refs, 0.3, 1))
    _decode_dir(tmp_path, "mono", "test", refs, _corrupt(refs, 0.4, 2))
    dnn = _decode_dir(tmp_path, "dnn_sgd", "test", refs, _corrupt(refs, 0.2, 3))
    (dnn.parent / "train_summary.json").write_text(json.dumps({"optimizer": "sgd"}))
    rows = collect_results(tmp_path)
    assert all(r.wer_ci is not None and r.wer_ci[0] < r.wer_percent < r.wer_ci[1] for r in rows)
    table = paired_table(rows)
    assert "to `tri1`" in table and "| dnn_sgd |" in table and "| mono |" in table  # best GMM is the reference
    md = results_markdown(tmp_path, "T")
    assert md.startswith("# T") and "## Paired differences" in md and "[" in md
