"""The same monophone training twice gives the same model (issue #18: -84.59 vs -84.35).

The culprit was Gaussian mixing-up: the Kaldi binding's ``DiagGmm::Split`` perturbs the
split means with ``std::random_device`` draws; equal alignments were also seeded by a
cut's place in its shard, so ``--nj`` changed the model.
"""

import json

import numpy as np
import pytest

from asr_hf.gmm.gmm import GmmSet, split_by_count
from asr_hf.gmm.mono import MonoConfig, train_mono


def test_mixing_up_is_seeded_and_moves_every_copy():
    gmm = GmmSet.single(np.zeros(3), np.ones(3), 2)
    occ = np.array([1000.0, 300.0])
    a, b = split_by_count(gmm, occ, 8), split_by_count(gmm, occ, 8)
    assert a.num_gauss == 8
    for x, y in ((a.means, b.means), (a.vars, b.vars), (a.weights, b.weights)):
        np.testing.assert_array_equal(x, y)
    assert len(np.unique(a.means, axis=0)) == 8  # no two components left identical
    assert not np.array_equal(split_by_count(gmm, occ, 8, seed=1).means, a.means)
    np.testing.assert_allclose(a.means.mean(0), 0.0, atol=0.05)  # +-delta pairs: centred on the old mean


def _loglikes(exp):
    return [json.loads(line)["avg_loglike"] for line in (exp / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_mono_twice_gives_identical_models(tiny_corpus, tmp_path):
    cfg = MonoConfig(num_iters=4, max_iter_inc=3, totgauss=300, realign_iters=(2,), jobs=2)  # mixes up
    cuts = tiny_corpus.mfcc_cuts("train")
    train_mono(tiny_corpus.lang_dir, cuts, tmp_path / "a", cfg)
    train_mono(tiny_corpus.lang_dir, cuts, tmp_path / "b", cfg)
    assert (tmp_path / "a" / "final.mdl").read_bytes() == (tmp_path / "b" / "final.mdl").read_bytes()
    assert _loglikes(tmp_path / "a") == _loglikes(tmp_path / "b")
    # the equal alignment does not depend on how the cuts are sharded
    train_mono(tiny_corpus.lang_dir, cuts, tmp_path / "c", MonoConfig(num_iters=1, max_iter_inc=1, totgauss=120,
                                                                          realign_iters=(), jobs=1))  # fmt: skip
    train_mono(tiny_corpus.lang_dir, cuts, tmp_path / "d", MonoConfig(num_iters=1, max_iter_inc=1, totgauss=120,
                                                                          realign_iters=(), jobs=2))  # fmt: skip
    assert _loglikes(tmp_path / "c")[0] == pytest.approx(_loglikes(tmp_path / "d")[0], rel=1e-9)
