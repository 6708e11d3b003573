"""Decode dirs (wer.json/summary), acwt tuning on dev -> test, compare table, ark interop, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from decode_fixtures import LEXICON, alignment_for, one_hot_loglikes

from asr_hf.cli import main
from asr_hf.decode.decoder import DecodeConfig, decode_matrices
from asr_hf.decode.graph import read_tid2pdf
from asr_hf.decode.interop import read_matrices, write_matrices
from asr_hf.decode.pipeline import EvalSet, acwt_from, tune_and_test
from asr_hf.decode.report import collect_results, compare_table, plot_results, plot_training_curves, read_wer

DEV = {"d1": ["see", "tea"], "d2": ["a", "bee", "see"], "d3": ["tea", "a"]}
TEST = {"t1": ["bee", "tea"], "t2": ["see"]}


def _matrices(toy_lang, toy_model, toy_graph, sents, seed=0):
    tid2pdf = read_tid2pdf(toy_graph)
    out = {}
    for i, (u, words) in enumerate(sents.items()):
        n = 8 * sum(len(LEXICON[w]) for w in words) + 6
        pdfs = tid2pdf[np.asarray(alignment_for(toy_lang, toy_model, words, n, seed=seed + i + 1))]
        out[u] = one_hot_loglikes(pdfs, toy_model.trans_model.num_pdfs)
    return out


@pytest.fixture(scope="module")
def exp_tree(tmp_path_factory, toy_lang, toy_model, toy_graph):
    """exp/mono with decode_dev (sweep) and decode_test (tuned acwt) plus a train_summary.json."""
    exp = tmp_path_factory.mktemp("exp_tree")
    system = exp / "mono"
    system.mkdir()
    summary = {"optimizer": "em", "train_wall_s": 3725, "num_params": 12345, "heldout_loss": 1.23456,
               "heldout_acc": 0.6543, "world_size": 2, "device": "cpu"}
    (system / "train_summary.json").write_text(json.dumps(summary))
    dev_m = _matrices(toy_lang, toy_model, toy_graph, DEV)
    test_m = _matrices(toy_lang, toy_model, toy_graph, TEST, seed=10)
    dev = EvalSet("dev", dev_m.items(), DEV, {u: "spk1" if u != "d3" else "spk2" for u in DEV})
    test = EvalSet("test", test_m.items(), TEST, None)
    dev_rec, test_rec = tune_and_test(toy_graph, system, dev, test, DecodeConfig(), acwts=[0.05, 0.1, 0.2])
    return exp, dev_rec, test_rec, dev_m


def test_tuned_on_dev_applied_to_test(exp_tree):
    exp, dev_rec, test_rec, _ = exp_tree
    assert dev_rec["wer_percent"] == 0.0 and test_rec["wer_percent"] == 0.0
    assert [s["acwt"] for s in dev_rec["sweep"]] == [0.05, 0.1, 0.2]
    # all weights give 0% on these clean matrices: the tie goes to the configured 0.1
    assert dev_rec["acwt"] == 0.1 and acwt_from(exp / "mono" / "decode_dev") == 0.1
    assert test_rec["acwt"] == 0.1 and test_rec["acwt_source"].startswith("tuned on")
    assert dev_rec["system"] == "mono" and dev_rec["set"] == "dev"
    assert dev_rec["per_speaker"]["spk2"]["ref_words"] == 2
    assert dev_rec["frames"] > 0 and dev_rec["rtf_search"] > 0
    d = exp / "mono" / "decode_dev"
    for name in ("wer.json", "summary.txt", "per_utt.txt", "hyp.txt", "ref.txt", ".done"):
        assert (d / name).is_file(), name
    assert read_wer(d) == json.loads((d / "wer.json").read_text())
    summary = (d / "summary.txt").read_text()
    assert "%WER 0.00 [ 0 / 7" in summary and "spk1" in summary and "acwt 0.05" in summary


def test_compare_table_and_plot(exp_tree, tmp_path):
    exp = exp_tree[0]
    rows = collect_results(exp)
    assert {(r.system, r.set) for r in rows} == {("mono", "dev"), ("mono", "test")}
    table = compare_table(rows)
    lines = table.strip().splitlines()
    assert lines[0] == (
        "| system | optimizer | dev %WER | test %WER | held-out CE | held-out acc % | train time | params | device |"
    )
    assert lines[2] == "| mono | em | 0.00 [0.00, 0.00] | 0.00 [0.00, 0.00] | 1.235 | 65.4 | 1:02:05 | 12345 | cpu x2 |"
    png = plot_results(rows, tmp_path / "wer.png")
    assert png.stat().st_size > 1000
    assert lines[1].count("|") == lines[0].count("|")
    (exp / "mono" / "train_log.jsonl").write_text('{"iter": 1, "loglike": -90.1}\n')  # a GMM log
    assert plot_training_curves(exp, tmp_path / "none.png") is None
    log = [{"wall_s": 0.0, "heldout_loss": 2.0, "heldout_acc": 0.1}, {"wall_s": 5.0, "heldout_loss": 1.0, "heldout_acc": 0.5}]
    (exp / "mono" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert plot_training_curves(exp, tmp_path / "curves.png").stat().st_size > 1000


def test_ark_roundtrip_decodes_the_same(exp_tree, toy_graph, tmp_path):
    dev_m = exp_tree[3]
    n = write_matrices(dev_m.items(), tmp_path / "ll.ark", tmp_path / "ll.scp")
    assert n == len(dev_m)
    back = dict(read_matrices(tmp_path / "ll.scp"))
    assert set(back) == set(dev_m)
    np.testing.assert_array_equal(back["d1"], dev_m["d1"])
    assert decode_matrices(toy_graph, read_matrices(f"ark:{tmp_path / 'll.ark'}")) == DEV


def test_cli_decode_matrices_score_compare(exp_tree, toy_graph, tmp_path, capsys):
    exp = exp_tree[0]
    write_matrices(exp_tree[3].items(), tmp_path / "ll.ark", tmp_path / "ll.scp")
    (tmp_path / "text").write_text("".join(f"{u} {' '.join(w)}\n" for u, w in DEV.items()))
    out_dir = exp / "other" / "decode_dev"
    rc = main([
        "decode-matrices", str(toy_graph), str(tmp_path / "ll.scp"), str(out_dir), "--text", str(tmp_path / "text"),
        "--jobs", "1", "--acwt-from", str(exp / "mono" / "decode_dev"),
    ])  # fmt: skip
    assert rc == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["wer_percent"] == 0.0 and rec["acwt"] == 0.1 and "tuned on" in rec["acwt_source"]

    (tmp_path / "hyp").write_text("d1 see tea\nd2 a bee\n")
    assert main(["score", str(tmp_path / "text"), str(tmp_path / "hyp")]) == 0
    out = capsys.readouterr().out
    assert "%WER 42.86 [ 3 / 7, 0 ins, 3 del, 0 sub ]" in out and "1 reference(s) had no hypothesis" in out

    assert main(["compare", str(exp), "--plot", str(tmp_path / "c.png")]) == 0
    table = capsys.readouterr().out
    assert "| other | - | 0.00 [0.00, 0.00] | - |" in table and (tmp_path / "c.png").is_file()
    # bad input is one line, exit 2
    assert main(["score", str(tmp_path / "nope"), str(tmp_path / "hyp")]) == 2


def test_acwt_sweep_extends_past_an_edge(monkeypatch, tmp_path):
    """A sweep whose best weight is its largest decodes once more beyond it (the sweep's
    own ratio there) until the optimum is bracketed, and records that."""
    import asr_hf.decode.pipeline as P
    from asr_hf.decode.decoder import Hypothesis

    calls = []
    refs = {"u1": ["a", "b"], "u2": ["c"]}

    def fake_decode(graph_dir, items, cfg, log_priors, acwts, matrix_fn):
        items = list(items)
        calls.append(list(acwts))
        # u1 is right from acwt 0.2 on, u2 only in [0.3, 0.5]: the optimum lies beyond the sweep
        ok = {"u1": lambda a: a >= 0.2, "u2": lambda a: 0.3 <= a <= 0.5}
        return {a: {u: Hypothesis(words=list(refs[u]) if ok[u](a) else ["x"], num_frames=5, score=0.0)
                    for u, _ in items} for a in acwts}  # fmt: skip

    monkeypatch.setattr(P, "decode_hypotheses", fake_decode)
    items = iter([("u1", np.zeros((5, 2))), ("u2", np.zeros((5, 2)))])  # consumed once
    rec = P.decode_and_score("g", tmp_path / "sys" / "decode_dev", P.EvalSet("dev", items, refs),
                             DecodeConfig(), acwts=[0.05, 0.1, 0.2])  # fmt: skip
    # 0.2 * (0.2 / 0.1) = 0.4 is best and again at the edge: 0.4 * 2 = 0.8 brackets it
    assert calls == [[0.05, 0.1, 0.2], [0.4], [0.8]]
    assert rec["acwt"] == 0.4 and rec["wer_percent"] == 0.0
    assert [s["acwt"] for s in rec["sweep"]] == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert rec["sweep_extended"] == 2 and rec["sweep_best_at_edge"] is False


def _fake_decode(root, system, set_name, wer, per_speaker):
    d = root / system / f"decode_{set_name}"
    d.mkdir(parents=True)
    per = {s: {"ref_words": n, "wer_percent": w} for s, (n, w) in per_speaker.items()}
    (d / "wer.json").write_text(json.dumps({"wer_percent": wer, "ref_words": 100, "per_speaker": per}))


def test_speakers_section_lists_the_best_systems_speakers(tmp_path):
    from asr_hf.decode.report import speakers_section

    _fake_decode(tmp_path, "mono", "test", 30.0, {"a": (50, 20.0), "b": (50, 40.0)})
    _fake_decode(tmp_path, "dnn_sgd", "test", 15.0, {"a": (40, 10.0), "b": (40, 12.0), "c": (20, 29.0)})
    _fake_decode(tmp_path, "dnn_sgd", "dev", 5.0, {"z": (10, 5.0)})
    text = speakers_section(collect_results(tmp_path))
    assert "best system `dnn_sgd`" in text and "3 speakers" in text
    assert "mean over speakers 17.00" in text and "worst speaker `c` 29.00 (+12.00 over the mean, 1.71x)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "speaker" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["a", "b", "c"]  # sorted by WER


def test_stage_times_add_up_over_reruns(tmp_path):
    from asr_hf.decode.report import stage_times_section

    (tmp_path / "stage_times.tsv").write_text(
        "100\t160\t0\tsynthesize\n160\t3760\t3\tmonophone GMM\nbad line\n4000\t4030\t3\tmonophone GMM\n"
    )
    text = stage_times_section(tmp_path)
    assert "| 0 | synthesize | 0:01:00 |" in text and "| 3 | monophone GMM | 1:00:30 |" in text
    assert "Sum of stage times 1:01:30" in text
    assert stage_times_section(tmp_path / "missing") == ""


def test_sweeps_section_shows_every_weight_and_the_choice(exp_tree):
    from asr_hf.decode.report import sweeps_section

    text = sweeps_section(collect_results(exp_tree[0]))
    assert "| mono | 0.05: 0.00, **0.1: 0.00**, 0.2: 0.00 | - | 0.1 |" in text


def _scored(root, system, set_name, n_wrong, n_utts=60, optimizer=None):
    """A decode dir whose hypotheses get the first ``n_wrong`` utterances' 3 words all wrong."""
    d = root / system / f"decode_{set_name}"
    d.mkdir(parents=True)
    ref = {f"u{i:03d}": ["a", "b", "c"] for i in range(n_utts)}
    hyp = {u: (["x", "y", "z"] if i < n_wrong else w) for i, (u, w) in enumerate(ref.items())}
    (d / "ref.txt").write_text("".join(f"{u} {' '.join(w)}\n" for u, w in ref.items()))
    (d / "hyp.txt").write_text("".join(f"{u} {' '.join(w)}\n" for u, w in hyp.items()))
    (d / "wer.json").write_text(json.dumps({"wer_percent": 100.0 * n_wrong / n_utts, "ref_words": 3 * n_utts}))
    if optimizer:
        (root / system / "train_summary.json").write_text(json.dumps({"optimizer": optimizer}))


def test_ladder_table_resolves_each_step(tmp_path):
    from asr_hf.decode.report import ladder_table

    # mono 30 wrong, tri1 29 (the same utterances but one: unresolved), tri2 15, DNN 5
    for system, wrong, opt in (("mono", 30, None), ("tri1", 29, None), ("tri2", 15, None), ("dnn_sgd", 5, "sgd")):
        _scored(tmp_path, system, "test", wrong, optimizer=opt)
    text = ladder_table(collect_results(tmp_path))
    rows = {line.split("|")[2].strip(): line for line in text.splitlines()[2:]}
    assert list(rows) == ["mono -> tri1", "tri1 -> tri2", "tri2 -> dnn_sgd"]
    assert "50.00 -> 48.33" in rows["mono -> tri1"] and rows["mono -> tri1"].rstrip().endswith("| no |")
    assert rows["tri1 -> tri2"].rstrip().endswith("| yes, better |") and "-23.33" in rows["tri1 -> tri2"]
    assert rows["tri2 -> dnn_sgd"].rstrip().endswith("| yes, better |") and "-66.7%" in rows["tri2 -> dnn_sgd"]


def test_results_pair_every_dnn_against_sgd(tmp_path):
    from asr_hf.decode.report import results_markdown

    for system, wrong, opt in (("tri3", 30, None), ("dnn_sgd", 10, "sgd"), ("dnn_hf", 11, "hf"), ("dnn_hf_s1", 30, "hf")):
        _scored(tmp_path, system, "test", wrong, optimizer=opt)
    text = results_markdown(tmp_path)
    section = text.split("## Every DNN against `dnn_sgd`")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| dnn_")}
    assert set(rows) == {"dnn_hf", "dnn_hf_s1"}  # DNNs only, the GMMs stay in the GMM-referenced table
    assert "+1.67" in rows["dnn_hf"] and "+33.33" in rows["dnn_hf_s1"]


def test_best_dnn_and_gmm_are_chosen_on_dev_and_kept_on_test(tmp_path):
    from asr_hf.decode.report import best_gmm_and_dnn, ladder_table

    # dnn_a is best on dev, dnn_b on test: the test row still compares dnn_a (no choosing on test)
    for system, dev_wrong, test_wrong, opt in (("tri3", 30, 30, None), ("dnn_a", 10, 12, "sgd"), ("dnn_b", 12, 10, "sgd")):
        _scored(tmp_path, system, "dev", dev_wrong, optimizer=opt)
        _scored(tmp_path, system, "test", test_wrong, optimizer=opt)
    rows = collect_results(tmp_path)
    assert best_gmm_and_dnn(rows) == ("tri3", "dnn_a")
    last = [line for line in ladder_table(rows).splitlines() if "tri3 ->" in line]
    assert [line.split("|")[1:3] for line in last] == [[" dev ", " tri3 -> dnn_a "], [" test ", " tri3 -> dnn_a "]]
