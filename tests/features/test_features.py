import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from asr_hf.features.cmvn import apply_cmvn, compute_cmvn_stats, read_cmvn, write_cmvn
from asr_hf.features.extract import compute_features, kaldi_num_frames
from asr_hf.features.kaldi_ark import export_features_ark, import_features_ark
from asr_hf.utils.errors import DataError


def _cuts(tmp_path, n=3, sr=16000, seconds=(1.0, 1.37, 0.8)):
    rng = np.random.default_rng(0)
    cuts = []
    for i in range(n):
        path = tmp_path / f"spk{i % 2}-utt{i}.wav"
        x = 0.1 * rng.standard_normal(int(sr * seconds[i % len(seconds)])).astype(np.float32)
        sf.write(path, x, sr)
        rec = Recording.from_file(path, recording_id=path.stem)
        sup = SupervisionSegment(path.stem, path.stem, 0.0, rec.duration, text="hello world", speaker=f"spk{i % 2}")
        cuts.append(MonoCut(path.stem, 0.0, rec.duration, 0, recording=rec, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


def test_kaldi_frame_count():
    assert kaldi_num_frames(400, 16000) == 1
    assert kaldi_num_frames(399, 16000) == 0
    assert kaldi_num_frames(16000, 16000) == 98
    assert kaldi_num_frames(8000, 8000) == 98


@pytest.mark.parametrize("kind, dim", [("fbank", 40), ("mfcc", 13)])
def test_features_match_torchaudio_kaldi(tmp_path, kind, dim):
    from torchaudio.compliance import kaldi

    cuts = _cuts(tmp_path)
    out = compute_features(cuts, kind, tmp_path / kind, "train", jobs=2, progress=False)
    assert (tmp_path / kind / "cuts_train.jsonl.gz").is_file()
    for cut in out:
        feats = cut.load_features()
        audio = cut.recording.load_audio()
        assert feats.shape == (kaldi_num_frames(audio.shape[1], 16000), dim) == (cut.num_frames, dim)
        fn = kaldi.fbank if kind == "fbank" else kaldi.mfcc
        extra = {"num_mel_bins": 40} if kind == "fbank" else {"num_ceps": 13, "num_mel_bins": 23}
        ref = fn(torch.from_numpy(audio) * 32768, sample_frequency=16000.0, dither=0.0, energy_floor=1.0,
                 **extra).numpy()
        # lilcom storage is lossy at ~1e-3 relative precision
        np.testing.assert_allclose(feats, ref, atol=0.05 + 2e-3 * np.abs(ref).max())


def test_bad_audio_stops_without_output(tmp_path):
    cuts = _cuts(tmp_path)
    bad = next(iter(cuts))
    (tmp_path / f"{bad.id}.wav").write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DataError, match=bad.id):
        compute_features(cuts, "fbank", tmp_path / "fb", "train", jobs=1, progress=False)
    assert not (tmp_path / "fb" / "cuts_train.jsonl.gz").exists()
    assert not (tmp_path / "fb" / "feats_train").exists()


def test_bad_audio_skipped_and_reported(tmp_path):
    cuts = _cuts(tmp_path)
    bad = next(iter(cuts))
    (tmp_path / f"{bad.id}.wav").write_bytes(b"")
    out = compute_features(cuts, "fbank", tmp_path / "fb", "train", jobs=1, skip_bad=True, progress=False)
    assert bad.id not in {c.id for c in out} and len(out) == len(cuts) - 1
    assert bad.id in (tmp_path / "fb" / "skipped_train.txt").read_text()


def test_empty_wav_is_named_and_nothing_is_written(tmp_path):
    """A well-formed WAV holding 0 samples (a header and nothing else): one line naming the
    file; no manifest or feature archive is left, and with skip_bad it is one skip line."""
    cuts = list(_cuts(tmp_path, n=2))
    path = tmp_path / "spk1-empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    rec = Recording.from_file(path, recording_id=path.stem)
    empty = MonoCut(path.stem, 0.0, rec.duration, 0, recording=rec,
                    supervisions=[SupervisionSegment(path.stem, path.stem, 0.0, rec.duration, text="hi", speaker="spk1")])
    cuts[1] = empty
    with pytest.raises(DataError) as err:
        compute_features(CutSet.from_cuts(cuts), "fbank", tmp_path / "fb", "train", jobs=1, progress=False)
    assert str(err.value) == f"{empty.id}: {path}: empty audio"
    assert not (tmp_path / "fb" / "cuts_train.jsonl.gz").exists()
    out = compute_features(CutSet.from_cuts(cuts), "fbank", tmp_path / "fb2", "train", jobs=1, skip_bad=True,
                           progress=False)
    assert [c.id for c in out] == [cuts[0].id]
    assert (tmp_path / "fb2" / "skipped_train.txt").read_text().splitlines() == [f"{empty.id}\t{path}: empty audio"]


def test_wrong_sampling_rate_named(tmp_path):
    cuts = _cuts(tmp_path, sr=8000)
    with pytest.raises(DataError, match="8000 Hz, expected 16000"):
        compute_features(cuts, "fbank", tmp_path / "fb", "train", jobs=1, sampling_rate=16000, progress=False)


def test_duplicate_ids_rejected(tmp_path):
    cuts = list(_cuts(tmp_path, n=2))
    with pytest.raises(DataError, match="duplicate"):
        compute_features(cuts + cuts[:1], "fbank",
                         tmp_path / "fb", "train", jobs=1, progress=False)


def test_cmvn_stats_and_ark_round_trip(tmp_path):
    cuts = compute_features(_cuts(tmp_path, n=4), "mfcc", tmp_path / "m", "train", jobs=1, progress=False)
    stats = compute_cmvn_stats(cuts)
    assert set(stats) == {"spk0", "spk1"}
    spk0 = np.concatenate([c.load_features() for c in cuts if c.supervisions[0].speaker == "spk0"]).astype(np.float64)
    np.testing.assert_allclose(stats["spk0"][0, :-1], spk0.sum(0))
    np.testing.assert_allclose(stats["spk0"][1, :-1], (spk0**2).sum(0))
    assert stats["spk0"][0, -1] == spk0.shape[0]
    normed = apply_cmvn(spk0, stats["spk0"], norm_vars=True)
    np.testing.assert_allclose(normed.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normed.std(0), 1, atol=1e-3)
    write_cmvn(stats, tmp_path / "cmvn.ark", tmp_path / "cmvn.scp")
    for path in ("cmvn.ark", "cmvn.scp"):
        back = read_cmvn(tmp_path / path)
        for k in stats:
            np.testing.assert_array_equal(back[k], stats[k])


def test_one_speaker_rule_for_cmvn_and_speaker_transforms(tmp_path):
    """A cut without a speaker is its own speaker (Kaldi's utt2spk = utt) in CMVN and in
    the GMM pipeline's per-speaker lookups alike: the stats are found under the key the
    pipeline asks for."""
    from dataclasses import replace

    from asr_hf.gmm.feats import speaker_of as gmm_speaker_of

    cuts = list(compute_features(_cuts(tmp_path, n=3), "mfcc", tmp_path / "m", "train", jobs=1, progress=False))
    anon = replace(cuts[2], supervisions=[replace(cuts[2].supervisions[0], speaker=None)])
    stats = compute_cmvn_stats([cuts[0], cuts[1], anon])
    assert set(stats) == {cuts[0].supervisions[0].speaker, cuts[1].supervisions[0].speaker, anon.id}
    assert gmm_speaker_of(anon) == anon.id and gmm_speaker_of(cuts[0]) == cuts[0].supervisions[0].speaker
    np.testing.assert_allclose(stats[anon.id][0, :-1], anon.load_features().astype(np.float64).sum(0))


def test_feature_ark_round_trip(tmp_path):
    cuts = compute_features(_cuts(tmp_path), "fbank", tmp_path / "fb", "train", jobs=1, progress=False)
    assert export_features_ark(cuts, tmp_path / "feats.ark", tmp_path / "feats.scp") == len(cuts)
    data = tmp_path / "data"
    data.mkdir()
    (data / "text").write_text("".join(f"{c.id} hello world\n" for c in cuts))
    (data / "utt2spk").write_text("".join(f"{c.id} {c.supervisions[0].speaker}\n" for c in cuts))
    back = import_features_ark(tmp_path / "feats.scp", tmp_path / "imp", "train", data_dir=data)
    by_id = {c.id: c for c in back}
    for cut in cuts:
        np.testing.assert_allclose(by_id[cut.id].load_features(), cut.load_features(), atol=1e-2)
        assert by_id[cut.id].supervisions[0].speaker == cut.supervisions[0].speaker
        assert by_id[cut.id].num_frames == cut.num_frames


def test_short_and_missing_audio_named_and_skipped_one_line_each(tmp_path):
    """Audio under one 25 ms window (torchaudio asserts) and a deleted file: each a
    DataError naming the cut / file; with skip_bad, one line per cut in skipped_<split>.txt."""
    from asr_hf.features.extract import extract_cut, make_extractor

    cuts = list(_cuts(tmp_path, n=3, seconds=(1.0, 0.0125, 0.8)))
    good, short, gone = cuts
    (tmp_path / f"{gone.id}.wav").unlink()
    ex = make_extractor("fbank")
    with pytest.raises(DataError) as err:
        extract_cut(short, ex)
    assert str(err.value) == f"{short.id}: audio shorter than one analysis window (200 samples < 400, 25 ms at 16000 Hz)"
    with pytest.raises(DataError) as err:
        extract_cut(gone, ex)
    assert str(err.value) == f"{tmp_path / gone.id}.wav: not found"

    out = compute_features(CutSet.from_cuts(cuts), "fbank", tmp_path / "fb", "train", jobs=1, skip_bad=True,
                           progress=False)
    assert [c.id for c in out] == [good.id]
    lines = (tmp_path / "fb" / "skipped_train.txt").read_text().splitlines()
    assert sorted(lines) == sorted([
        f"{short.id}\t{short.id}: audio shorter than one analysis window (200 samples < 400, 25 ms at 16000 Hz)",
        f"{gone.id}\t{tmp_path / gone.id}.wav: not found",
    ])


def test_lhotse_multiline_errors_become_one_line(tmp_path, monkeypatch):
    """lhotse's sample-count check says "Please report this issue in Lhotse" over several
    lines (plus "[extra info]" with the whole manifest); soundfile's errors re-raised by
    lhotse's wrapper surface as "TypeError: an integer is required"."""
    from lhotse.audio.recording import assert_and_maybe_fix_num_samples
    from lhotse.utils import rich_exception_info

    from asr_hf.features.extract import load_cut_audio

    cut = next(iter(_cuts(tmp_path, n=1)))

    @rich_exception_info
    def short_read(self, *a, **k):
        return assert_and_maybe_fix_num_samples(np.zeros((1, 4000)), offset=0.0, duration=1.0, recording=self.recording)

    monkeypatch.setattr(MonoCut, "load_audio", short_read)
    with pytest.raises(DataError) as err:
        load_cut_audio(cut)
    assert str(err.value) == f"{tmp_path / cut.id}.wav: unreadable audio (truncated audio: 4000 samples, manifest says 16000)"

    (tmp_path / f"{cut.id}.wav").write_bytes(b"RIFF\x00\x00garbage")
    monkeypatch.undo()
    from lhotse.audio.backend import audio_backend

    with audio_backend("LibsndfileBackend"), pytest.raises(DataError) as err:
        load_cut_audio(cut)
    msg = str(err.value)
    assert "\n" not in msg and "TypeError" not in msg and "[extra info]" not in msg
    assert msg == f"{tmp_path / cut.id}.wav: unreadable audio (LibsndfileError: Error opening '{tmp_path / cut.id}.wav': Format not recognised)"


def test_speed_perturbation_makes_kaldi_named_copies(tmp_path):
    from asr_hf.data.cuts import speed_perturb

    cuts = _cuts(tmp_path)
    sp = speed_perturb(cuts, (0.9, 1.0, 1.1))
    assert len(sp) == 3 * len(cuts)
    by_id = {c.id: c for c in sp}
    orig = cuts[0]
    slow, fast = by_id[f"sp0.9-{orig.id}"], by_id[f"sp1.1-{orig.id}"]
    assert slow.supervisions[0].speaker == "sp0.9-" + orig.supervisions[0].speaker
    assert slow.supervisions[0].text == orig.supervisions[0].text
    # 0.9 is slower: longer audio by 1/0.9 (Kaldi/sox speed semantics)
    n = orig.load_audio().shape[-1]
    assert abs(slow.load_audio().shape[-1] - n / 0.9) <= 2 and abs(fast.load_audio().shape[-1] - n / 1.1) <= 2
    feats = compute_features(sp, "mfcc", tmp_path / "mfcc", "train", jobs=1, progress=False)
    assert {c.id for c in feats} == set(by_id)
    with pytest.raises(DataError, match="factor 3"):
        speed_perturb(cuts, (3.0,))


def test_stale_features_are_refused_not_reused(tmp_path):
    cuts = _cuts(tmp_path)
    compute_features(cuts, "mfcc", tmp_path / "mfcc", "train", jobs=1, progress=False)
    # the same input is a complete stage: reused
    again = compute_features(cuts, "mfcc", tmp_path / "mfcc", "train", jobs=1, progress=False)
    assert len(again) == len(cuts)
    # a different cut list (corpus re-made, speed perturbation switched on) must not reuse old features
    compute_features(cuts.subset(first=2), "mfcc", tmp_path / "mfcc2", "train", jobs=1, progress=False)
    with pytest.raises(DataError, match="stale: made from 2 cuts but the input now has 3"):
        compute_features(cuts, "mfcc", tmp_path / "mfcc2", "train", jobs=1, progress=False)


def test_features_cli_speed_perturbs_only_the_train_split(tmp_path):
    from asr_hf.cli import main

    corpus = tmp_path / "corpus"
    (corpus / "manifests").mkdir(parents=True)
    cuts = _cuts(tmp_path)
    cuts.to_file(corpus / "manifests" / "cuts_train.jsonl.gz")
    cuts.to_file(corpus / "manifests" / "cuts_dev.jsonl.gz")
    assert main(["features", "--corpus", str(corpus), "--out", str(tmp_path / "f"), "--kind", "mfcc",
                 "--speed-perturb", "0.9,1.0", "--jobs", "1"]) == 0  # fmt: skip
    train = CutSet.from_file(tmp_path / "f" / "cuts_train.jsonl.gz")
    dev = CutSet.from_file(tmp_path / "f" / "cuts_dev.jsonl.gz")
    assert len(train) == 2 * len(cuts) and len(dev) == len(cuts)
    assert main(["features", "--corpus", str(corpus), "--out", str(tmp_path / "g"), "--kind", "mfcc",
                 "--speed-perturb", "0.9,fast"]) == 2  # fmt: skip


def test_features_cli_bad_input_is_one_line_and_skip_bad_skips(tmp_path, capsys):
    """Through ``asr-hf features`` as the recipes call it: a wrong rate and a short cut stop
    the command with one line (exit 2, no manifest); ``--skip-bad`` drops the short cut with
    one line in skipped_train.txt."""
    from asr_hf.cli import main

    corpus = tmp_path / "corpus"
    (corpus / "manifests").mkdir(parents=True)
    cuts = list(_cuts(tmp_path, n=3, seconds=(1.0, 0.0125, 0.8)))
    CutSet.from_cuts(cuts).to_file(corpus / "manifests" / "cuts_train.jsonl.gz")
    base = ["features", "--corpus", str(corpus), "--kind", "mfcc", "--jobs", "1"]
    capsys.readouterr()
    def errors():  # stderr less the progress bars
        return [x for x in capsys.readouterr().err.strip().splitlines() if "%|" not in x]

    assert main([*base, "--out", str(tmp_path / "a"), "--sampling-rate", "8000"]) == 2
    err = errors()
    assert len(err) == 1 and err[0].startswith(f"asr-hf features: error: {cuts[0].id}: ") and \
        err[0].endswith("sampling rate 16000 Hz, expected 8000 Hz"), err
    assert main([*base, "--out", str(tmp_path / "b")]) == 2
    err = errors()
    assert err == [f"asr-hf features: error: {cuts[1].id}: audio shorter than one analysis window "
                   "(200 samples < 400, 25 ms at 16000 Hz)"]
    assert not (tmp_path / "a" / "cuts_train.jsonl.gz").exists() and not (tmp_path / "b" / "cuts_train.jsonl.gz").exists()
    assert main([*base, "--out", str(tmp_path / "c"), "--skip-bad", "--sampling-rate", "16000"]) == 0
    assert [c.id for c in CutSet.from_file(tmp_path / "c" / "cuts_train.jsonl.gz")] == [cuts[0].id, cuts[2].id]
    assert (tmp_path / "c" / "skipped_train.txt").read_text().splitlines() == [
        f"{cuts[1].id}\t{cuts[1].id}: audio shorter than one analysis window (200 samples < 400, 25 ms at 16000 Hz)"]


def test_features_made_with_other_options_are_refused(tmp_path):
    cuts = _cuts(tmp_path)
    compute_features(cuts, "fbank", tmp_path / "f", "train", jobs=1, progress=False, num_mel_bins=23)
    with pytest.raises(DataError, match=r"stale: made with .*\"num_mel_bins\": 23.* but asked for .*\"kind\": \"mfcc\""):
        compute_features(cuts, "mfcc", tmp_path / "f", "train", jobs=1, progress=False)
    with pytest.raises(DataError, match="stale"):
        compute_features(cuts, "fbank", tmp_path / "f", "train", jobs=1, progress=False, num_mel_bins=40)
    assert len(compute_features(cuts, "fbank", tmp_path / "f", "train", jobs=1, progress=False, num_mel_bins=23)) == 3


def test_finished_features_without_a_record_of_their_options_are_refused(tmp_path):
    from asr_hf.data.paths import feature_config_path

    cuts = _cuts(tmp_path)
    compute_features(cuts, "fbank", tmp_path / "f", "train", jobs=1, progress=False)
    feature_config_path(tmp_path / "f", "train").unlink()  # as an older asr_hf left it
    with pytest.raises(DataError) as err:
        compute_features(cuts, "fbank", tmp_path / "f", "train", jobs=1, progress=False)
    assert str(err.value) == (f"{tmp_path / 'f' / 'cuts_train.jsonl.gz'}: finished features with no record of their "
                              f"options (feature_config_train.json missing); remove {tmp_path / 'f'} (or use another "
                              "--out) to recompute")


def test_mixed_sampling_rates_in_a_split_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cuts = list(_cuts(tmp_path / "a", n=2)) + list(_cuts(tmp_path / "b", n=1, sr=8000))
    with pytest.raises(DataError, match=r"sampling rate 16000 Hz, but .*spk0-utt0.wav in the same split is 8000 Hz"):
        compute_features(CutSet.from_cuts(cuts), "mfcc", tmp_path / "f", "train", jobs=1, progress=False)
    assert not (tmp_path / "f" / "cuts_train.jsonl.gz").exists()


def _stereo_cut(tmp_path, sr=16000, seconds=1.0):
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((int(sr * seconds), 2))).astype(np.float32)
    x[:, 1] *= 3.0  # the channels differ, so channel 0 alone is not the average
    path = tmp_path / "spk0-stereo.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    rec = Recording.from_file(path, recording_id=path.stem)
    sup = SupervisionSegment(path.stem, path.stem, 0.0, rec.duration, text="hello world", speaker="spk0")
    return MonoCut(path.stem, 0.0, rec.duration, 0, recording=rec, supervisions=[sup]), x


def test_multichannel_audio_is_refused_unless_downmixed(tmp_path):
    """A stereo recording is not silently reduced to channel 0: refused naming the file,
    the channel count and the cut; with downmix, the features are those of the average."""
    from asr_hf.features.extract import extract_cut, make_extractor

    cut, x = _stereo_cut(tmp_path)
    mono = list(_cuts(tmp_path, n=1))
    msg = (f"{tmp_path}/spk0-stereo.wav: 2-channel audio (cut spk0-stereo); features are single-channel: "
           "pass --downmix (asr-hf features) to average the channels, or split the channels into cuts")
    with pytest.raises(DataError) as err:
        extract_cut(cut, make_extractor("fbank"))
    assert str(err.value) == msg
    with pytest.raises(DataError) as err:
        compute_features(CutSet.from_cuts(mono + [cut]), "fbank", tmp_path / "fb", "train", jobs=1, progress=False)
    assert str(err.value) == f"spk0-stereo: {msg}" and "\n" not in str(err.value)
    assert not (tmp_path / "fb").exists() or not any((tmp_path / "fb").iterdir())  # nothing a later stage trusts

    out = compute_features(CutSet.from_cuts(mono + [cut]), "fbank", tmp_path / "fb", "train", jobs=1,
                           progress=False, downmix=True)  # fmt: skip
    got = {c.id: c for c in out}["spk0-stereo"].load_features()
    avg = tmp_path / "avg" / "spk0-avg.wav"
    avg.parent.mkdir()
    sf.write(avg, x.mean(axis=1), 16000, subtype="FLOAT")
    ref = extract_cut(MonoCut("avg", 0.0, 1.0, 0, recording=Recording.from_file(avg)), make_extractor("fbank"))
    np.testing.assert_allclose(got, ref, atol=0.05 + 2e-3 * np.abs(ref).max())
    # features made with --downmix are not reused by a run that refuses multi-channel audio
    with pytest.raises(DataError, match='stale: made with .*"downmix": true'):
        compute_features(CutSet.from_cuts(mono + [cut]), "fbank", tmp_path / "fb", "train", jobs=1, progress=False)


def test_cuts_of_each_channel_are_read_as_their_channel(tmp_path):
    """Switchboard-style: one cut per side of a 2-channel recording is a deliberate channel
    selection, neither refused nor averaged."""
    from asr_hf.features.extract import extract_cut, make_extractor

    cut, x = _stereo_cut(tmp_path)
    sides = [MonoCut(f"side{ch}", 0.0, cut.duration, ch, recording=cut.recording) for ch in (0, 1)]
    out = compute_features(CutSet.from_cuts(sides), "fbank", tmp_path / "fb", "train", jobs=1, progress=False)
    for ch in (0, 1):
        one = tmp_path / f"ch{ch}" / "one.wav"
        one.parent.mkdir()
        sf.write(one, x[:, ch], 16000, subtype="FLOAT")
        ref = extract_cut(MonoCut("r", 0.0, 1.0, 0, recording=Recording.from_file(one)), make_extractor("fbank"))
        got = {c.id: c for c in out}[f"side{ch}"].load_features()
        np.testing.assert_allclose(got, ref, atol=0.05 + 2e-3 * np.abs(ref).max())


def test_wav_shorter_than_its_header_is_refused_by_name(tmp_path):
    """libsndfile clamps a cut-short WAV to the bytes present (Recording.from_file then
    agrees with it); the header's data size is checked, and the file named."""
    from asr_hf.features.extract import extract_cut, make_extractor

    cuts = list(_cuts(tmp_path, n=2))
    bad = cuts[0]
    path = tmp_path / f"{bad.id}.wav"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2 * 6000])  # 16-bit mono: 6000 samples short of 16000
    with pytest.raises(DataError) as err:
        extract_cut(bad, make_extractor("fbank"))
    assert str(err.value) == f"{path}: truncated WAV: the header declares 16000 samples, the file holds 10000"
    with pytest.raises(DataError) as err:
        compute_features(CutSet.from_cuts(cuts), "fbank", tmp_path / "fb", "train", jobs=1, progress=False)
    assert str(err.value) == f"{bad.id}: {path}: truncated WAV: the header declares 16000 samples, the file holds 10000"
    assert not (tmp_path / "fb" / "cuts_train.jsonl.gz").exists() and not (tmp_path / "fb" / "feats_train").exists()
    # a manifest made after the truncation agrees with the file; the header still does not
    again = Recording.from_file(path, recording_id=bad.id)
    with pytest.raises(DataError, match="truncated WAV"):
        extract_cut(MonoCut(bad.id, 0.0, again.duration, 0, recording=again), make_extractor("fbank"))


def test_features_cli_recomputes_cmvn_stats_older_than_the_manifest(tmp_path):
    """CMVN stats are written once per features run and kept while the manifest is the one
    they came from; features recomputed (a rewritten manifest) get fresh stats."""
    import os

    from asr_hf.cli import main

    corpus = tmp_path / "corpus"
    (corpus / "manifests").mkdir(parents=True)
    _cuts(tmp_path).to_file(corpus / "manifests" / "cuts_train.jsonl.gz")
    out = tmp_path / "f"
    cmd = ["features", "--corpus", str(corpus), "--out", str(out), "--kind", "mfcc", "--jobs", "1"]
    assert main(cmd) == 0
    ark = out / "cmvn_train.ark"
    good = read_cmvn(ark)
    stale = {k: v * 0 + 1 for k, v in good.items()}  # stand-in for stats of an older manifest
    write_cmvn(stale, ark, out / "cmvn_train.scp")
    os.utime(ark, (1, 1))  # ... written before the manifest
    assert main(cmd) == 0  # the features are reused; the stale stats are not
    back = read_cmvn(ark)
    for k in good:
        np.testing.assert_array_equal(back[k], good[k])
    mtime = ark.stat().st_mtime
    assert main(cmd) == 0 and ark.stat().st_mtime == mtime  # up to date: left alone


def test_gmm_stages_and_decoding_read_the_features_stage_cmvn(tmp_path):
    """CMVN is computed once, by the features stage: the GMM trainers' and aligner's
    ``compute_cmvn`` and decoding's / dump-gmm-feats' ``cmvn_for_cuts`` read
    ``cmvn_<split>.ark`` beside the manifest, and compute only without a current one."""
    import os

    from asr_hf.cli import main
    from asr_hf.features.cmvn import cmvn_for_cuts, stored_cmvn
    from asr_hf.gmm.aligner import compute_cmvn

    corpus = tmp_path / "corpus"
    (corpus / "manifests").mkdir(parents=True)
    _cuts(tmp_path).to_file(corpus / "manifests" / "cuts_train.jsonl.gz")
    out = tmp_path / "f"
    assert main(["features", "--corpus", str(corpus), "--out", str(out), "--kind", "mfcc", "--jobs", "1"]) == 0
    manifest, ark = out / "cuts_train.jsonl.gz", out / "cmvn_train.ark"
    cuts = CutSet.from_file(manifest)
    computed = compute_cmvn_stats(cuts)
    marked = {k: v + 1.0 for k, v in computed.items()}  # distinguishable from a recomputation
    write_cmvn(marked, ark)

    class NoPasses:  # a runner that fails if the GMM code computes the stats itself
        def run(self, *a, **k):
            raise AssertionError("CMVN recomputed although the features stage wrote it")

    for got in (stored_cmvn([manifest]), cmvn_for_cuts(manifest, cuts), compute_cmvn(NoPasses(), [manifest])):
        assert set(got) == set(marked)
        for k in marked:
            np.testing.assert_array_equal(got[k], marked[k])
    # two manifests sharing a speaker: the stats add up
    both = stored_cmvn([manifest, manifest])
    np.testing.assert_array_equal(both["spk0"], 2 * marked["spk0"])
    # stale (older than the manifest) or absent: computed from the features instead
    os.utime(ark, (1, 1))
    assert stored_cmvn([manifest]) is None
    fresh = cmvn_for_cuts(manifest, cuts)
    for k in computed:
        np.testing.assert_allclose(fresh[k], computed[k], rtol=1e-12)
    ark.unlink()
    assert stored_cmvn([manifest]) is None and set(cmvn_for_cuts(manifest, cuts)) == set(computed)
