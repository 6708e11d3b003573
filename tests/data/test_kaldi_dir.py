"""Kaldi data directories: export -> validate -> import round trip, and every validation check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_ldc import write_audio, write_shorten_header
from lhotse import RecordingSet, SupervisionSet
from lhotse.audio import AudioSource, Recording
from lhotse.supervision import SupervisionSegment

from asr_hf.data.kaldi_dir import export_kaldi_dir, import_kaldi_dir, validate_kaldi_dir, wav_scp_entry
from asr_hf.data.sphere import read_sphere_header, sphere_recording
from asr_hf.utils import DataError

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs the sox binary")


def _sup(id_, rec, start, dur, spk, text, channel=0, gender=None):
    return SupervisionSegment(id=id_, recording_id=rec, start=start, duration=dur, channel=channel,
                              speaker=spk, text=text, gender=gender)


@pytest.fixture()
def corpus(tmp_path: Path):
    """Two mono 16-bit WAVs, one FLAC and one stereo SPHERE file with supervisions."""
    audio = tmp_path / "audio"
    samples = {
        "recA": write_audio(audio / "recA.wav", 3.0, 16000, 1, seed=1, fmt="WAV"),
        "recB": write_audio(audio / "recB.wav", 2.0, 16000, 1, seed=2, fmt="WAV"),
        "recF": write_audio(audio / "recF.flac", 1.5, 16000, 1, seed=3, fmt="FLAC"),
        "conv": write_audio(audio / "conv.sph", 4.0, 8000, 2, seed=4),
    }
    recs = RecordingSet.from_recordings(
        [Recording.from_file(audio / f"{r}.{ext}") for r, ext in
         (("recA", "wav"), ("recB", "wav"), ("recF", "flac"))] + [sphere_recording(audio / "conv.sph")]
    )
    sups = SupervisionSet.from_segments([
        _sup("spk1-a1", "recA", 0.0, 1.25, "spk1", "hello world", gender="male"),
        _sup("spk1-a2", "recA", 1.5, 1.5, "spk1", "good  morning\tto you", gender="male"),
        _sup("spk2-b1", "recB", 0.1, 1.8, "spk2", "it's <unk> fine", gender="female"),
        _sup("spk2-f1", "recF", 0.0, 1.5, "spk2", "flac audio", gender="female"),
        _sup("conv-A_000010-000200", "conv", 0.1, 1.9, "conv-A", "side a speaks", channel=0, gender="m"),
        _sup("conv-B_000050-000350", "conv", 0.5, 3.0, "conv-B", "side b answers", channel=1, gender="f"),
    ])
    return recs, sups, samples


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@needs_sox
def test_round_trip(tmp_path, corpus):
    recs, sups, samples = corpus
    out = export_kaldi_dir(recs, sups, tmp_path / "data" / "train")
    assert validate_kaldi_dir(out) == []
    wav = dict(line.split(" ", 1) for line in _lines(out / "wav.scp"))
    assert sorted(wav) == ["conv-A", "conv-B", "recA", "recB", "recF"]
    assert wav["recA"] == str((tmp_path / "audio" / "recA.wav").absolute())  # Kaldi reads it directly
    assert wav["recF"].startswith("sox ") and wav["recF"].endswith(" |")
    assert "remix 2" in wav["conv-B"] and wav["conv-B"].endswith("|")
    assert _lines(out / "spk2utt")[0] == "conv-A conv-A_000010-000200"
    assert "spk1 spk1-a1 spk1-a2" in _lines(out / "spk2utt")
    assert "spk1-a2 good morning to you" in _lines(out / "text")
    assert "spk1-a2 recA 1.5 3" in _lines(out / "segments")
    assert _lines(out / "spk2gender") == ["conv-A m", "conv-B f", "spk1 m", "spk2 f"]
    assert (out / "reco2dur").is_file() and (out / "utt2dur").is_file()
    assert _lines(out / "reco2file_and_channel") == [
        "conv-A conv A", "conv-B conv B", "recA recA 1", "recB recB 1", "recF recF 1"]

    recs2, sups2 = import_kaldi_dir(out)
    kaldi_rec = {"recA": "recA", "recB": "recB", "recF": "recF"}
    for s in sups:
        t = sups2[s.id]
        want_rec = kaldi_rec.get(s.recording_id, f"{s.recording_id}-{'AB'[s.channel]}")
        assert t.recording_id == want_rec
        assert t.start == pytest.approx(s.start, abs=1e-6) and t.end == pytest.approx(s.end, abs=1e-6)
        assert t.text == " ".join(s.text.split()) and t.speaker == s.speaker
        assert t.gender == {"male": "m", "female": "f"}.get(s.gender, s.gender)
    assert sorted(s.id for s in sups2) == sorted(s.id for s in sups)
    # Audio comes back sample-exact, the stereo sides through their sox pipes.
    assert recs2["recA"].duration == pytest.approx(3.0)
    side_b = recs2["conv-B"]
    assert side_b.num_channels == 1 and side_b.sampling_rate == 8000
    got = side_b.load_audio()[0]
    np.testing.assert_allclose(got, samples["conv"][:, 1] / 32768.0, atol=1e-6)
    np.testing.assert_allclose(recs2["recF"].load_audio()[0], samples["recF"][:, 0] / 32768.0, atol=1e-6)

    # A second export of the imported manifests gives the same tables.
    again = export_kaldi_dir(recs2, sups2, tmp_path / "data" / "again")
    for name in ("segments", "text", "utt2spk", "spk2utt", "spk2gender"):
        assert _lines(again / name) == _lines(out / name)


def test_import_without_segments(tmp_path):
    write_audio(tmp_path / "a.wav", 1.0, 8000, 1, fmt="WAV")
    write_audio(tmp_path / "b.wav", 0.5, 8000, 1, seed=1, fmt="WAV")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "wav.scp").write_text(f"s1-a {tmp_path / 'a.wav'}\ns2-b {tmp_path / 'b.wav'}\n")
    (d / "text").write_text("s1-a one\ns2-b two words\n")
    (d / "utt2spk").write_text("s1-a s1\ns2-b s2\n")
    (d / "spk2utt").write_text("s1 s1-a\ns2 s2-b\n")
    assert validate_kaldi_dir(d) == []
    recs, sups = import_kaldi_dir(d)
    assert [(s.id, s.recording_id, s.start, s.duration, s.text) for s in sups] == [
        ("s1-a", "s1-a", 0.0, 1.0, "one"), ("s2-b", "s2-b", 0.0, 0.5, "two words")
    ]


@needs_sox
def test_import_pipe_and_failures(tmp_path):
    write_audio(tmp_path / "a.wav", 1.0, 8000, 2, fmt="WAV")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "wav.scp").write_text(f"r1 sox {tmp_path / 'a.wav'} -t wav - remix 1 |\n")
    (d / "segments").write_text("s-1 r1 0.2 0.7\n")
    (d / "text").write_text("s-1 hi\n")
    (d / "utt2spk").write_text("s-1 s\n")
    (d / "spk2utt").write_text("s s-1\n")
    recs, sups = import_kaldi_dir(d)
    assert recs["r1"].sources[0].type == "command" and recs["r1"].duration == pytest.approx(1.0)
    assert sups["s-1"].duration == pytest.approx(0.5)

    (d / "segments").write_text("s-1 r1 0.2 3.0\n")  # no reco2dur: only the import can tell
    assert validate_kaldi_dir(d) == []
    with pytest.raises(DataError, match="s-1: segment 0.2-3.0s lies outside recording 'r1'"):
        import_kaldi_dir(d)
    (d / "wav.scp").write_text("r1 sox /nonexistent/x.wav -t wav - |\n")
    with pytest.raises(DataError, match="r1: wav.scp command failed"):
        import_kaldi_dir(d)
    (d / "wav.scp").write_text(f"r1 {tmp_path / 'missing.wav'}\n")
    with pytest.raises(DataError, match="r1.*audio file not found"):
        import_kaldi_dir(d)


def test_wav_scp_entries(tmp_path):
    write_shorten_header(tmp_path / "sw02001.sph")
    rec = sphere_recording(tmp_path / "sw02001.sph")
    assert read_sphere_header(tmp_path / "sw02001.sph")["sample_coding"].startswith("ulaw,embedded-shorten")
    assert rec.num_channels == 2 and rec.duration == pytest.approx(2.0)
    assert wav_scp_entry(rec, 1) == f"sph2pipe -f wav -p -c 2 {tmp_path / 'sw02001.sph'} |"
    assert "rate 16000" in wav_scp_entry(rec.resample(16000), 0)
    cmd = Recording(id="c", sources=[AudioSource("command", [0, 1], "cat x.wav")], sampling_rate=8000,
                    num_samples=8000, duration=1.0)
    assert wav_scp_entry(cmd, 1) == "cat x.wav | sox -t wav - -t wav -b 16 -e signed-integer - remix 2 |"
    url = Recording(id="u", sources=[AudioSource("url", [0], "http://x/y.wav")], sampling_rate=8000,
                    num_samples=8000, duration=1.0)
    with pytest.raises(DataError, match="u: audio source of type 'url'"):
        wav_scp_entry(url, 0)
    (tmp_path / "bad.sph").write_bytes(b"RIFF....")
    with pytest.raises(DataError, match="not a NIST SPHERE"):
        sphere_recording(tmp_path / "bad.sph")


# --------------------------------------------------------------------------- validation


@pytest.fixture()
def valid_dir(tmp_path, corpus) -> Path:
    recs, sups, _ = corpus
    return export_kaldi_dir(recs, sups, tmp_path / "valid")


def _edit(path: Path, fn) -> None:
    path.write_text("".join(line + "\n" for line in fn(_lines(path))))


def test_validate_unsorted(valid_dir):
    _edit(valid_dir / "text", lambda ls: [ls[1], ls[0]] + ls[2:])
    problems = validate_kaldi_dir(valid_dir)
    assert len(problems) == 1 and "conv-A_000010-000200" in problems[0] and "not sorted" in problems[0]


def test_validate_missing_utt2spk_entry(valid_dir):
    _edit(valid_dir / "utt2spk", lambda ls: [x for x in ls if not x.startswith("spk2-b1 ")])
    problems = validate_kaldi_dir(valid_dir)
    assert "spk2-b1: in text but missing from utt2spk" in problems
    assert "spk2-b1: in segments but missing from utt2spk" in problems
    assert "spk2: spk2utt does not match utt2spk (utterances spk2-b1)" in problems


def test_validate_empty_text(valid_dir):
    _edit(valid_dir / "text", lambda ls: [x.split()[0] if x.startswith("spk1-a2") else x for x in ls])
    assert validate_kaldi_dir(valid_dir) == ["spk1-a2: empty transcript in text (line 4)"]
    with pytest.raises(DataError, match="spk1-a2: empty transcript"):
        validate_kaldi_dir(valid_dir, raise_on_error=True)
    with pytest.raises(DataError, match="spk1-a2: empty transcript"):
        import_kaldi_dir(valid_dir)


def test_validate_duplicate_id(valid_dir):
    _edit(valid_dir / "utt2spk", lambda ls: ls[:3] + [ls[2]] + ls[3:])
    key = _lines(valid_dir / "utt2spk")[2].split()[0]
    assert f"{key}: duplicate key in utt2spk (lines 3 and 4)" in validate_kaldi_dir(valid_dir)
    with pytest.raises(DataError, match=f"{key}: duplicate key in utt2spk"):
        import_kaldi_dir(valid_dir)


def test_validate_names_a_file_that_is_not_utf8(valid_dir):
    text = valid_dir / "text"
    data = text.read_bytes()
    cut = data.index(b"\n") + 1 + data[data.index(b"\n") + 1 :].index(b" ") + 1  # first word of line 2
    text.write_bytes(data[:cut] + b"caf\xe9 " + data[cut:])  # Latin-1, not UTF-8
    assert validate_kaldi_dir(valid_dir) == [f"{text}: not valid UTF-8 (byte {cut + 3})"]
    with pytest.raises(DataError, match=f"{text}: not valid UTF-8"):
        import_kaldi_dir(valid_dir)


def test_validate_segment_outside_recording(valid_dir):
    _edit(valid_dir / "segments", lambda ls: [
        "spk2-b1 recB 0.1 2.5" if x.startswith("spk2-b1 ") else x for x in ls])
    _edit(valid_dir / "utt2dur", lambda ls: ["spk2-b1 2.4" if x.startswith("spk2-b1 ") else x for x in ls])
    problems = validate_kaldi_dir(valid_dir)
    assert problems == ["spk2-b1: segment ends at 2.5s, after recording 'recB' (2.0s)"]
    _edit(valid_dir / "segments", lambda ls: [
        "spk2-b1 recB 1.0 0.5" if x.startswith("spk2-b1 ") else x for x in ls])
    assert validate_kaldi_dir(valid_dir) == ["spk2-b1: segment end 0.5 is not after start 1.0"]


def test_validate_speaker_order_and_files(tmp_path, valid_dir):
    # Utterance ids that do not start with their speaker break Kaldi's sort-by-speaker check.
    d = tmp_path / "order"
    d.mkdir()
    (d / "wav.scp").write_text("a /x.wav\nb /y.wav\n")
    (d / "text").write_text("a hi\nb ho\n")
    (d / "utt2spk").write_text("a zed\nb amy\n")
    (d / "spk2utt").write_text("amy b\nzed a\n")
    problems = validate_kaldi_dir(d, check_audio_files=False)
    assert len(problems) == 1 and problems[0].startswith("b: utt2spk is not sorted when sorted on speaker")
    assert any("audio file not found: /x.wav" in p for p in validate_kaldi_dir(d))

    (valid_dir / "spk2utt").unlink()
    (valid_dir / "wav.scp").write_bytes((valid_dir / "wav.scp").read_bytes().replace(b"\n", b"\r\n"))
    problems = validate_kaldi_dir(valid_dir)
    assert any(p.endswith("spk2utt: required file is missing") for p in problems)
    assert any("carriage return" in p for p in problems)
    with pytest.raises(DataError, match="Kaldi data directory not found"):
        validate_kaldi_dir(tmp_path / "nowhere")


# --------------------------------------------------------------------------- export errors


def test_export_rejects_bad_supervisions(tmp_path, corpus):
    recs, sups, _ = corpus
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    good = list(sups)

    def export(sup_list, **kw):
        return export_kaldi_dir(recs, SupervisionSet.from_segments(sup_list), out, **kw)

    cases = [
        (good + [_sup("spk1-e", "recA", 0.0, 1.0, "spk1", "  ")], "spk1-e: empty transcript"),
        (good + [good[0]], "spk1-a1: duplicate utterance id"),
        (good + [_sup("spk1-x", "recA", 2.5, 1.0, "spk1", "too long")],
         r"spk1-x: segment ends at 3.500s, after recording 'recA' \(3.000s\)"),
        (good + [_sup("spk1-y", "nope", 0.0, 1.0, "spk1", "x")], "spk1-y: refers to unknown recording 'nope'"),
        (good + [_sup("zz-1", "recB", 0.0, 1.0, "aa", "x")], "zz-1: utterance ids do not sort consistently"),
        (good + [_sup("spk1-z", "recA", 0.0, 1.0, None, "x")], "spk1-z: has no speaker"),
    ]
    for sup_list, message in cases:
        with pytest.raises(DataError, match=message):
            export(sup_list)
        assert sorted(p.name for p in out.iterdir()) == ["keep"]  # untouched
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]  # no debris
    # The speaker prefix fixes the ordering problem.
    d = export(good + [_sup("zz-1", "recB", 0.0, 1.0, "aa", "x")], add_speaker_prefix=True)
    assert "aa-zz-1 aa" in _lines(d / "utt2spk") and validate_kaldi_dir(d) == []
    assert not (d / "keep").exists()
    with pytest.raises(DataError, match="recording id"):
        export_kaldi_dir(RecordingSet.from_recordings(list(recs) + [recs["recA"]]), sups, tmp_path / "x")


def test_export_plain_wav_needs_16bit(tmp_path):
    data = np.zeros((800, 1), dtype=np.float32)
    sf.write(tmp_path / "f.wav", data, 8000, subtype="FLOAT")
    rec = Recording.from_file(tmp_path / "f.wav")
    assert wav_scp_entry(rec, 0).startswith("sox ")
