"""tri2 (LDA+MLLT) on tri1's alignments, on the tiny corpus (the ``tri2`` fixture trains it
through the CLI): the exp dir's transform, alignment, graph and decoding with the unchanged commands."""

import json

import numpy as np
import pytest

from asr_hf.cli import main
from asr_hf.gmm.feats import read_matrix
from asr_hf.gmm.lda_mllt import read_mllt_log
from asr_hf.gmm.model import GmmSystem, read_log

pytestmark = pytest.mark.slow


def test_tri2_exp_dir(tri2, systems):
    assert (tri2 / ".done").is_file()
    cfg = json.loads((tri2 / "config.json").read_text())
    assert cfg["stage"] == "train_lda_mllt" and cfg["config"]["mllt_iters"] == [2, 4, 6] and cfg["config"]["dim"] == 40
    system = GmmSystem.load(tri2)
    pipe = system.pipeline
    assert pipe.splice == 3 and pipe.delta_order == 0 and pipe.transform.shape == (40, 91)
    np.testing.assert_allclose(read_matrix(tri2 / "final.mat"), pipe.transform)
    # final.mat = M_6 M_4 M_2 LDA: the last MLLT snapshot is the final transform; the LDA differs from it
    np.testing.assert_allclose(read_matrix(tri2 / "6.mat"), pipe.transform)
    assert not np.allclose(read_matrix(tri2 / "0.mat"), pipe.transform, atol=1e-3)
    assert system.gmm.dim == 40 and system.tree.context_width == 3

    # every MLLT estimation: objective never decreases over the row sweeps, and improves
    mllt = read_mllt_log(tri2)
    assert [r["iter"] for r in mllt] == [2, 4, 6]
    for r in mllt:
        tr = r["objf_per_frame"]
        assert all(b >= a - 1e-9 for a, b in zip(tr, tr[1:])) and r["improvement_per_frame"] > 0.0
    log = read_log(tri2)
    ll = [r["avg_loglike"] for r in log]
    assert [r["iter"] for r in log] == list(range(1, 8)) and ll[-1] > ll[0] + 1.0
    summary = json.loads((tri2 / "summary.json").read_text())
    assert summary["lda_dim"] == 40 and summary["lda_input_dim"] == 91
    assert summary["agreement_with_source"]["frame_phone_agreement"] > 0.7
    # LDA statistics exclude silence: fewer frames than the training set
    assert 0 < summary["lda_count"] < summary["frames"]
    failed = (tri2 / "ali" / "failed_train.txt").read_text()
    assert "broken-utterance\t" in failed


def test_tri2_align_mkgraph_decode(tri2, tiny_corpus, bigram_G, tmp_path, capsys):
    from lhotse import CutSet

    lang = str(tiny_corpus.lang_dir)
    dev = str(tiny_corpus.mfcc_cuts("dev"))
    assert main(["align", dev, lang, str(tri2), "--jobs", "2"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["utterances"] >= 0.6 * len(CutSet.from_file(dev))
    ali_cuts = CutSet.from_file(tri2 / "ali" / "cuts_dev.jsonl.gz")
    system = GmmSystem.load(tri2)
    assert all(c.load_pdf_ali().max() < system.num_pdfs for c in ali_cuts)

    train10 = tmp_path / "cuts_train10.jsonl.gz"
    CutSet.from_file(tiny_corpus.mfcc_cuts("train")).subset(first=10).to_file(train10)
    fast = ["--beam", "10", "--max-active", "500", "--jobs", "1", "--acwt", "0.07"]
    assert main(["mkgraph", lang, str(tri2), "--G", str(bigram_G)]) == 0
    capsys.readouterr()
    wer, counts = {}, {}
    for cuts in (train10, dev):
        assert main(["decode-gmm", str(tri2), str(cuts), *fast]) == 0
        r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert r["ref_words"] > 50 and not r.get("failed_utts")
        wer[r["set"]] = r["wer_percent"]
        counts[r["set"]] = r
    print("tiny-corpus tri2 WER", wer)
    # training voices: well below a broken system's ~100%.  Unseen dev voices: a tiny
    # system sits near 90-100% there (96.8 on 2026-12-02; 100.0 = 12 correct, 73 sub, 8 del,
    # 12 ins of 93 on a fresh machine 2026-12-03), so the dev check guards only against a
    # decoder that outputs nothing (few hypothesis words, no correct ones) or mostly insertions
    assert wer["train10"] < 40.0, wer
    d = counts["dev"]
    assert d["correct"] > 0 and d["correct"] + d["substitutions"] >= 0.5 * d["ref_words"], d
    assert d["insertions"] < 0.5 * d["ref_words"], d
