"""HCLG construction on the toy lexicon/LM (see conftest) whose best path is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asr_hf.decode.graph import (
    GraphConfig,
    build_hclg,
    compose_lg,
    load_graph_info,
    read_tid2pdf,
    remove_input_symbols,
)
from asr_hf.utils import DataError, is_done
from asr_hf.utils.kaldi import kfst

from decode_fixtures import BEST_COST, BEST_WORDS, WORDS


def _arcs(fst):
    for s in range(fst.num_states):
        yield from ((s, a) for a in kfst.ArcIterator(fst, s))


def _best(fst):
    ok, ilabels, olabels, weight = kfst.get_linear_symbol_sequence(kfst.shortest_path(fst))
    assert ok
    return ilabels, [WORDS[w] for w in olabels], float(weight.value)


def test_lg_best_path(toy_lang):
    LG = compose_lg(toy_lang.L_disambig, toy_lang.G)
    _, words, cost = _best(LG)
    assert words == BEST_WORDS
    assert cost == pytest.approx(BEST_COST, abs=1e-3)


def test_hclg_without_hmm_weights_keeps_lg_best_path(toy_lang, toy_model):
    """With transition/self-loop scales 0 the HMM adds no cost: same best words and cost as L o G."""
    cfg = GraphConfig(transition_scale=0.0, self_loop_scale=0.0)
    L, G, m = toy_lang.L_disambig, toy_lang.G, toy_model
    HCLG, info = build_hclg(L, G, toy_lang.disambig, m.tree, m.trans_model, cfg)
    ilabels, words, cost = _best(HCLG)
    assert words == BEST_WORDS
    assert cost == pytest.approx(BEST_COST, abs=1e-3)
    # The input is a transition-id sequence: a -> AH (3 HMM states), bee -> B IY (6 states).
    tid2pdf = np.asarray(toy_model.trans_model.transition_id_to_pdf_array())
    phones = [toy_model.trans_model.transition_id_to_phone(t) for t in ilabels]
    assert [p for i, p in enumerate(phones) if i == 0 or p != phones[i - 1]] == [2, 3, 4]
    assert len(ilabels) == 9 and all(tid2pdf[t] >= 0 for t in ilabels)
    assert set(info.sizes) == {"LG", "CLG", "Ha", "HCLGa", "HCLG"}


def test_hclg_labels_are_transition_ids(toy_lang, toy_model):
    HCLG, info = build_hclg(toy_lang.L_disambig, toy_lang.G, toy_lang.disambig, toy_model.tree, toy_model.trans_model)
    n = toy_model.trans_model.num_transition_ids
    assert info.num_transition_ids == n and info.num_disambig_tids == 2
    ilabels = {a.ilabel for _, a in _arcs(HCLG)}
    olabels = {a.olabel for _, a in _arcs(HCLG)}
    assert max(ilabels) <= n  # disambiguation transition-ids removed
    assert olabels <= {0} | {toy_lang.word_ids[w] for w in ("a", "bee", "see", "tea")}
    # self-loops were added: some arc loops back to its own state with a self-loop transition-id
    loops = [a.ilabel for s, a in _arcs(HCLG) if a.nextstate == s and a.ilabel > 0]
    assert loops and all(toy_model.trans_model.is_self_loop(t) for t in loops)
    assert info.sizes["HCLG"].states == HCLG.num_states


def test_remove_input_symbols():
    fst = kfst.compile("0 1 1 5\n1 2 9 0\n2 3 2 6\n3\n")
    out = remove_input_symbols(fst, [9], range(1, 3))
    ok, ilabels, olabels, _ = kfst.get_linear_symbol_sequence(out)
    assert ok and ilabels == [1, 2] and olabels == [5, 6]


def test_make_graph_dir(toy_graph, toy_model):
    for name in ("HCLG.fst", "words.txt", "phones.txt", "tid2pdf.int", "transition_model.pkl", "graph.json"):
        assert (toy_graph / name).is_file(), name
    assert is_done(toy_graph)
    info = load_graph_info(toy_graph)
    assert info.num_pdfs == toy_model.trans_model.num_pdfs
    assert info.sizes["HCLG"].arcs > 0 and info.config["self_loop_scale"] == 0.1
    tid2pdf = read_tid2pdf(toy_graph)
    np.testing.assert_array_equal(tid2pdf[1:], np.asarray(toy_model.trans_model.transition_id_to_pdf_array())[1:])
    assert json.loads((toy_graph / "graph.json").read_text())["sizes"]["HCLG"]["states"] > 0


def test_make_graph_bad_lang_dir(tmp_path, toy_model):
    from asr_hf.decode.graph import make_graph

    with pytest.raises(DataError, match="words.txt"):
        make_graph(tmp_path, toy_model.tree, toy_model.trans_model, tmp_path / "graph")
    assert not (tmp_path / "graph").exists()


def test_triphone_graph_decodes_known_words(toy_lang, tmp_path):
    """Context width 3 (C with triphone windows): a state sequence decodes to its words."""
    from decode_fixtures import alignment_for, make_toy_triphone_model, one_hot_loglikes

    from asr_hf.decode.decoder import decode_matrices
    from asr_hf.decode.graph import make_graph

    model = make_toy_triphone_model()
    info = make_graph(toy_lang.path, model.tree, model.trans_model, tmp_path / "graph")
    assert info.context_width == 3 and info.central_position == 1
    tid2pdf = read_tid2pdf(tmp_path / "graph")
    sents = {"u1": ["bee", "see", "tea"], "u2": ["see", "bee"], "u3": ["a", "tea", "a"]}
    items = []
    for i, (u, words) in enumerate(sents.items()):
        tids = alignment_for(toy_lang, model, words, num_frames=60, seed=i + 3)
        if u == "u1":  # IY after B and IY after S/T use different pdfs: the left context matters
            iy = toy_lang.phone_ids["IY"]
            assert len({tid2pdf[t] for t in tids if model.trans_model.transition_id_to_phone(t) == iy}) == 6
        items.append((u, one_hot_loglikes(tid2pdf[np.asarray(tids)], model.trans_model.num_pdfs)))
    assert decode_matrices(tmp_path / "graph", items) == sents
