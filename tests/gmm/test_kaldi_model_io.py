"""Kaldi binary model files and transition-model bookkeeping."""

import numpy as np
import pytest

from asr_hf.gmm.feats import FeaturePipeline
from asr_hf.gmm.gmm import GmmSet
from asr_hf.gmm.model import GmmSystem
from asr_hf.gmm.topo import TransitionInfo, topology_text
from asr_hf.utils.errors import DataError
from asr_hf.utils.kaldi import khg


def _mono(nonsil=(3, 4, 5), sil=(1, 2)):
    topo = khg.HmmTopology()
    topo.read(topology_text(list(nonsil), list(sil)))
    phones = sorted(list(nonsil) + list(sil))
    cd = khg.monophone_context_dependency(phones, topo.get_phone_to_num_pdf_classes())
    return topo, cd, khg.TransitionModel(cd, topo)


def test_topology_shapes():
    topo, _, _ = _mono()
    assert topo.num_pdf_classes(3) == 3 and topo.num_pdf_classes(1) == 5
    assert len(topo.topology_for_phone(1)) == 6  # 5 emitting + final


def test_model_file_round_trip(tmp_path):
    topo, cd, tm = _mono()
    rng = np.random.default_rng(0)
    counts = rng.integers(5, 100, size=tm.num_transition_ids + 1).astype(np.float64)
    tm.mle_update(counts, khg.MleTransitionUpdateConfig())
    sizes = rng.integers(1, 4, size=tm.num_pdfs)
    gmm = GmmSet.from_pdfs(
        [rng.dirichlet(np.ones(k)) for k in sizes],
        [rng.normal(size=(k, 6)) for k in sizes],
        [rng.uniform(0.5, 2, size=(k, 6)) for k in sizes],
    )
    system = GmmSystem(tm, cd, gmm, FeaturePipeline(delta_order=1))
    system.save(tmp_path)
    back = GmmSystem.load(tmp_path)
    assert str(back.tm) == str(tm)
    np.testing.assert_allclose(back.tm.log_probs, tm.log_probs, rtol=0, atol=0)
    # the derived non-self-loop probabilities equal Kaldi's own
    np.testing.assert_allclose(back.tm.non_self_loop_log_probs, tm.non_self_loop_log_probs, atol=1e-6)
    np.testing.assert_array_equal(back.gmm.offsets, gmm.offsets)
    np.testing.assert_allclose(back.gmm.means, gmm.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back.gmm.vars, gmm.vars, rtol=1e-5)
    assert back.pipeline == system.pipeline
    x = rng.normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(back.pdf_loglikes(x), system.pdf_loglikes(x), rtol=1e-5, atol=1e-4)
    # Kaldi's binary layout: header, <TransitionModel>, then <DIMENSION> of the AmDiagGmm
    data = (tmp_path / "final.mdl").read_bytes()
    assert data.startswith(b"\0B<TransitionModel> <Topology> ") and b"<DIMENSION> " in data
    assert (tmp_path / "tree").read_bytes().startswith(b"\0BContextDependency ")


def test_bad_model_file(tmp_path):
    (tmp_path / "final.mdl").write_bytes(b"\0B<Nonsense> ")
    _, cd, _ = _mono()
    cd.write(True, str(tmp_path / "tree"))
    with pytest.raises(DataError):
        GmmSystem.load(tmp_path)


def test_transition_info_and_phone_segments():
    _, _, tm = _mono()
    info = TransitionInfo.from_model(tm)
    assert info.num_tids == tm.num_transition_ids
    for tid in range(1, info.num_tids + 1):
        assert info.phone[tid] == tm.transition_id_to_phone(tid)
        assert info.pdf[tid] == tm.transition_id_to_pdf(tid)
        assert info.self_loop[tid] == tm.is_self_loop(tid)
        assert info.final[tid] == tm.is_final(tid)

    def tid(phone, state, self_loop):
        for t in range(1, info.num_tids + 1):
            if info.phone[t] == phone and info.hmm_state[t] == state and info.self_loop[t] == self_loop:
                if self_loop or state < 2 and not info.final[t] or state == 2 and info.final[t]:
                    return t
        raise AssertionError

    # phone 3 (3 states) twice as long in state 0, then phone 4 with a reordered
    # tail (final transition followed by a self-loop of the last state)
    ali = [tid(3, 0, True), tid(3, 0, False), tid(3, 1, False), tid(3, 2, False),
           tid(4, 0, False), tid(4, 1, False), tid(4, 2, False), tid(4, 2, True)]  # fmt: skip
    phones, starts, ends = info.phone_segments(np.array(ali))
    assert phones.tolist() == [3, 4] and starts.tolist() == [0, 4] and ends.tolist() == [4, 8]
    lookup = info.tid_lookup()
    a = np.array(ali)
    np.testing.assert_array_equal(lookup(info.phone[a], info.hmm_state[a], info.pdf[a], info.trans_index[a]), a)
    with pytest.raises(ValueError):
        info.phone_segments(np.array(ali[:-2]))
