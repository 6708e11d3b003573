"""LDC corpus preparation on tiny fixtures laid out like the releases (see fixtures_ldc)."""

from __future__ import annotations

import argparse
import gzip
import logging
import shutil

import numpy as np
import pytest
from fixtures_ldc import (
    BN_DROPPED,
    BN_EXPECTED,
    EVAL97_EXPECTED,
    EVAL2000_EXPECTED,
    SWBD_DROPPED,
    SWBD_EXPECTED,
    make_bn,
    make_eval97,
    make_eval2000,
    make_swbd,
)
from lhotse import RecordingSet, SupervisionSet
from lhotse.audio.backend import audio_backend

from asr_hf.data import cli_ldc
from asr_hf.data.kaldi_dir import export_kaldi_dir, validate_kaldi_dir
from asr_hf.data.ldc import (
    Fragments,
    clean_bn_text,
    clean_cts_reference,
    clean_swbd_text,
    normalize_with_unk,
    parse_bn_sgml,
    prepare_bn,
    prepare_swbd,
)
from asr_hf.utils import DataError, is_done


def _texts(sups: SupervisionSet) -> dict[str, str]:
    return {s.id: s.text for s in sups}


# --------------------------------------------------------------------------- cleanup rules


@pytest.mark.parametrize(
    ("raw", "unk", "letters", "drop"),
    [
        ("[silence] [noise] [laughter] <b_aside> hi <e_aside>", "hi", "hi", "hi"),
        ("[vocalized-noise] [laughter-yes] i", "<unk> yes i", "<unk> yes i", "<unk> yes i"),
        ("th[e]- -[a]bout ab[solute]- the", "<unk> <unk> <unk> the", "th bout ab the", "the"),
        ("{yuppiedom} them_1 [it'n/isn't] uh-huh", "yuppiedom them it'n uh huh", "yuppiedom them it'n uh huh",
         "yuppiedom them it'n uh huh"),
        ("[laughter-wh[at]-]", "<unk>", "wh", ""),
    ],
)
def test_swbd_markup(raw, unk, letters, drop):
    assert normalize_with_unk(clean_swbd_text(raw)) == unk
    assert normalize_with_unk(clean_swbd_text(raw, Fragments.LETTERS)) == letters
    assert normalize_with_unk(clean_swbd_text(raw, Fragments.DROP)) == drop


def test_bn_and_cts_markup():
    assert normalize_with_unk(clean_bn_text("AT&T's {breath} ((Bob)) th- ++ -- #said# ^Clinton @Jones **jazzy**")) \
        == "at and t's bob <unk> said clinton jones jazzy"
    assert normalize_with_unk(clean_bn_text("the _u_s_a today, 5%")) == "the u s a today five percent"
    assert normalize_with_unk(clean_bn_text("[noise] {lipsmack}")) == ""
    ref = '<contraction e_form="[we=>we][\'re=>are]">we\'re %uh ((gonna)) (( )) go- {laugh} &Tom'
    assert normalize_with_unk(clean_cts_reference(ref)) == "we're uh gonna tom"


def test_parse_bn_sgml(tmp_path):
    _, trans = make_bn(tmp_path)
    ep = parse_bn_sgml(trans / "hub4e97_trans_980217" / "transcrp" / "a960521.sgml")
    assert ep.id == "a960521"
    assert [(s.speaker, s.gender, s.start, s.end) for s in ep.segments] == [
        ("Lou_Waters", "male", 0.0, 2.0), ("Lou_Waters", "male", 2.0, 3.5),
        ("Natalie_Allen", "female", 3.5, 5.0), ("Natalie_Allen", "female", 5.0, 6.0),
        ("Natalie_Allen", "female", 6.0, 7.5),
    ]
    assert ep.segments[4].text == "<unk> said # she"  # comment skipped, foreign speech -> <unk>
    bad = tmp_path / "bad.sgml"
    bad.write_text("<episode filename=bad>\n<turn speaker=x startTime=abc endTime=2>\nhi\n</turn>\n")
    with pytest.raises(DataError, match="bad.sgml: bad time starttime='abc'"):
        parse_bn_sgml(bad)


# --------------------------------------------------------------------------- Switchboard


def test_prepare_swbd_with_eval2000(tmp_path, caplog):
    audio, trans, samples = make_swbd(tmp_path)
    e_audio, e_trans = make_eval2000(tmp_path)
    out = tmp_path / "manifests" / "swbd"
    with caplog.at_level(logging.WARNING):
        corpus = prepare_swbd(audio, trans, out, eval2000_audio_dir=e_audio, eval2000_transcripts_dir=e_trans,
                              dev_utterances=1)
    assert "sw02012: no transcript for side(s) AB" in caplog.text
    assert set(corpus.splits) == {"train", "dev", "test"}
    texts = {name: _texts(sups) for name, (_, sups) in corpus.splits.items()}
    # dev holds the first conversation (both sides), train the others.
    assert texts["dev"] == {k: v for k, v in SWBD_EXPECTED.items() if k.startswith("sw02001")}
    assert texts["train"] == {k: v for k, v in SWBD_EXPECTED.items() if not k.startswith("sw02001")}
    assert texts["test"] == EVAL2000_EXPECTED
    assert corpus.dropped_empty == {"dev": 1, "train": 1, "test": 1}
    assert not (set(texts["dev"]) | set(texts["train"])) & SWBD_DROPPED

    recs, sups = corpus.splits["dev"]
    assert [r.id for r in recs] == ["sw02001"] and recs["sw02001"].num_channels == 2
    b = sups["sw02001-B_000300-000595"]
    assert (b.channel, b.speaker, b.start, b.duration) == (1, "sw02001-B", 3.0, 2.95)
    # The supervision's audio is the B channel of the conversation at the right times
    # (lhotse reads .sph through sph2pipe; the uncompressed fixture also reads with libsndfile).
    with audio_backend("LibsndfileBackend"):
        got = recs["sw02001"].load_audio(channels=1, offset=b.start, duration=b.duration)[0]
    np.testing.assert_allclose(got, samples["sw02001"][24000:24000 + len(got), 1] / 32768.0, atol=1e-6)
    assert len(got) == 23600

    # Written atomically with a .done marker; reading back gives the same manifests.
    assert is_done(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".done"] + [f"{k}_{s}.jsonl.gz" for k in ("recordings", "supervisions") for s in ("train", "dev", "test")]
    )
    back = SupervisionSet.from_file(out / "supervisions_test.jsonl.gz")
    assert _texts(back) == EVAL2000_EXPECTED
    assert [r.id for r in RecordingSet.from_file(out / "recordings_train.jsonl.gz")] == ["sw02005", "sw02010"]
    with gzip.open(out / "supervisions_dev.jsonl.gz", "rt") as f:
        assert '"speaker": "sw02001-A"' in f.readline()

    # The manifests export to a valid Kaldi data dir (sides as sw02001-A / sw02001-B).
    kd = export_kaldi_dir(*corpus.splits["dev"], tmp_path / "data" / "dev")
    assert validate_kaldi_dir(kd) == []
    wav_keys = [line.split()[0] for line in (kd / "wav.scp").read_text().splitlines()]
    assert wav_keys == ["sw02001-A", "sw02001-B"]


def test_prepare_swbd_errors(tmp_path):
    audio, trans, _ = make_swbd(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="Switchboard audio directory not found"):
        prepare_swbd(tmp_path / "nope", trans, out)
    with pytest.raises(DataError, match="eval2000"):
        prepare_swbd(audio, trans, out, eval2000_audio_dir=tmp_path)
    # A segment far beyond the end of its recording names the utterance; nothing is written.
    side = trans / "20" / "2010" / "sw2010B-ms98-a-trans.text"
    side.write_text("sw2010B-ms98-a-0001 0.250000 9.000000 right right\n")
    with pytest.raises(DataError, match=r"sw02010-B_000025-000900: segment 0.25-9.00s lies outside"):
        prepare_swbd(audio, trans, out)
    side.write_text("sw2010B-ms98-a-0001 0.250000\n")
    with pytest.raises(DataError, match="sw2010B-ms98-a-trans.text: malformed transcript line"):
        prepare_swbd(audio, trans, out)
    assert not out.exists()
    # A small overshoot (< 0.5 s) is clipped to the recording.
    side.write_text("sw2010B-ms98-a-0001 0.250000 2.300000 right right\n")
    corpus = prepare_swbd(audio, trans, None, dev_utterances=1)
    assert corpus.splits["train"][1]["sw02010-B_000025-000230"].end == pytest.approx(2.0)
    assert corpus.out_dir is None


# --------------------------------------------------------------------------- Broadcast News


def test_prepare_bn_speaker_disjoint(tmp_path):
    audio, trans = make_bn(tmp_path)
    out = tmp_path / "manifests" / "bn"
    corpus = prepare_bn(audio, trans, out, dev_fraction=0.25, test_fraction=0.25, seed=3)
    texts = {name: _texts(sups) for name, (_, sups) in corpus.splits.items()}
    assert {k: v for t in texts.values() for k, v in t.items()} == BN_EXPECTED
    assert sum(corpus.dropped_empty.values()) == len(BN_DROPPED) == 1
    names = {n: {s.speaker.split("_", 1)[1] for s in sups} for n, (_, sups) in corpus.splits.items()}
    assert all(names[n] for n in ("train", "dev", "test"))
    assert not (names["train"] & names["dev"] or names["train"] & names["test"] or names["dev"] & names["test"])
    train_recs, train_sups = corpus.splits["train"]
    assert {s.recording_id for s in train_sups} == set(train_recs.ids)
    for _, sups in corpus.splits.values():
        for s in sups:
            assert s.gender in ("m", "f") and s.channel == 0 and s.id.startswith(s.speaker + "-")
    assert is_done(out) and (out / "supervisions_test.jsonl.gz").is_file()


def test_prepare_bn_with_eval97(tmp_path):
    audio, trans = make_bn(tmp_path)
    eval97 = make_eval97(tmp_path)
    corpus = prepare_bn(audio, trans, None, eval97_dir=eval97, dev_fraction=0.25)
    texts = {name: _texts(sups) for name, (_, sups) in corpus.splits.items()}
    assert texts["test"] == EVAL97_EXPECTED
    assert {**texts["train"], **texts["dev"]} == BN_EXPECTED
    assert len({s.speaker.split("_", 1)[1] for s in corpus.splits["dev"][1]}) == 1
    assert list(corpus.splits["test"][0].ids) == ["h4e_97"]


def test_prepare_bn_errors(tmp_path):
    audio, trans = make_bn(tmp_path)
    with pytest.raises(DataError, match="no Broadcast News transcript files"):
        prepare_bn(audio, tmp_path / "LDC98S71", None)
    # An episode without audio is skipped; when none is left that is an error.
    for p in audio.rglob("*.sph"):
        p.rename(p.with_name("x" + p.name))
    with pytest.raises(DataError, match="no transcript matches an audio file"):
        prepare_bn(audio, trans, None)


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_ldc.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tmp_path, capsys):
    assert cli_ldc.FRAGMENT_CHOICES == tuple(f.value for f in Fragments)
    audio, trans, _ = make_swbd(tmp_path)
    out = tmp_path / "m"
    assert _cli(["prepare-swbd", "--audio-dir", str(audio), "--transcripts-dir", str(trans),
                 "--out", str(out), "--dev-utterances", "1", "--fragments", "letters"]) == 0
    assert "dev: 4 utterances" in capsys.readouterr().out
    dev = _texts(SupervisionSet.from_file(out / "supervisions_dev.jsonl.gz"))
    assert dev["sw02001-A_000098-000250"] == "hi um yeah i'd like to talk about th the weather"

    kd = tmp_path / "data" / "dev"
    assert _cli(["export-kaldi-dir", "--recordings", str(out / "recordings_dev.jsonl.gz"),
                 "--supervisions", str(out / "supervisions_dev.jsonl.gz"), "--out", str(kd)]) == 0
    assert _cli(["validate-kaldi-dir", str(kd), "--no-check-audio"]) == 0
    (kd / "text").write_text("sw02001-A_000098-000250\n")
    assert _cli(["validate-kaldi-dir", str(kd), "--no-check-audio"]) == 1
    printed = capsys.readouterr().out
    assert "sw02001-A_000098-000250: empty transcript in text (line 1)" in printed
    with pytest.raises(DataError, match="manifest not found"):
        _cli(["export-kaldi-dir", "--recordings", str(tmp_path / "nope"), "--supervisions", "x", "--out", "y"])
    # Done: a re-run skips (it would fail without the audio), --force redoes.
    shutil.rmtree(audio)
    args = ["prepare-swbd", "--audio-dir", str(audio), "--transcripts-dir", str(trans), "--out", str(out)]
    assert _cli(args) == 0
    with pytest.raises(DataError, match="Switchboard audio directory not found"):
        _cli(args + ["--force"])
    assert is_done(out)
