"""Fixtures of the GMM tests: the ladder mono -> tri1 (-> tri2) trained once per session
on the tiny corpus.

The ``systems`` directory holds ``mono/`` and ``tri1/`` (each with ``ali/``) and
``cuts_train.jsonl.gz``: the training cuts plus one utterance whose transcript
is far too long for its audio (it must be reported and skipped, never fatal);
the ``tri2`` fixture adds ``tri2/``.
"""

import pytest

from asr_hf.gmm.mono import MonoConfig, train_mono
from asr_hf.gmm.tree import TreeConfig
from asr_hf.gmm.tri import TriConfig, train_tri

BROKEN = "broken-utterance"


def _with_broken_cut(src, dst):
    """The training cuts plus one whose transcript is far too long for its audio."""
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    cuts = list(CutSet.from_file(src))
    bad = cuts[0]
    sup = fastcopy(bad.supervisions[0], text=" ".join([bad.supervisions[0].text] * 40))
    cuts.append(fastcopy(bad, id=BROKEN, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(dst)
    return dst


@pytest.fixture(scope="session")
def systems(tiny_corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("gmm_exp")
    lang = tiny_corpus.lang_dir
    train = _with_broken_cut(tiny_corpus.mfcc_cuts("train"), exp / "cuts_train.jsonl.gz")
    mono_cfg = MonoConfig(num_iters=10, max_iter_inc=7, totgauss=300, realign_iters=(1, 2, 3, 4, 6, 8), jobs=2)
    train_mono(lang, train, exp / "mono", mono_cfg)
    tri_cfg = TriConfig(
        num_leaves=150, totgauss=500, num_iters=8, max_iter_inc=5, realign_iters=(3, 6), jobs=2,
        tree=TreeConfig(min_leaf_count=30),
    )  # fmt: skip
    train_tri(lang, train, exp / "mono", exp / "tri1", tri_cfg)
    return exp


@pytest.fixture(scope="session")
def bigram_G(tiny_corpus, tmp_path_factory):
    """A bigram G.fst over the tiny corpus's LM text (for decoding tests)."""
    from asr_hf.lang.lang_dir import LangDir
    from asr_hf.lang.lm import make_G, train_lm

    out = tmp_path_factory.mktemp("lm")
    lang = LangDir.load(tiny_corpus.lang_dir)
    arpa = train_lm(tiny_corpus.corpus_dir / "lm_text.txt", out / "lm.arpa", order=2, vocabulary=lang.vocabulary)
    return make_G(arpa, lang, out / "G.fst")


@pytest.fixture(scope="session")
def tri2(systems, tiny_corpus):
    """tri2 (LDA+MLLT) on tri1's alignments, trained through ``asr-hf train-lda-mllt``."""
    from asr_hf.cli import main

    exp = systems / "tri2"
    args = ["train-lda-mllt", str(systems / "cuts_train.jsonl.gz"), str(tiny_corpus.lang_dir), str(systems / "tri1"),
            str(exp), "--num-leaves", "150", "--totgauss", "500", "--num-iters", "8", "--max-iter-inc", "5",
            "--realign-iters", "3,6", "--mllt-iters", "2,4,6", "--min-leaf-count", "30", "--jobs", "2"]  # fmt: skip
    assert main(args) == 0
    return exp
