import json

import numpy as np
import pytest
import soundfile as sf

from asr_hf.data.cuts import load_cuts
from asr_hf.data.synth import (
    SIZES,
    CorpusSize,
    Style,
    UtteranceJob,
    _run_sox,
    channel_effects,
    held_out_sentences,
    make_speakers,
    plan_corpus,
    render_utterance,
    voice_identities,
)
from asr_hf.utils.errors import DataError


def test_speakers_are_disjoint_and_distinct():
    spk = make_speakers("bn", SIZES["small"], seed=0)
    ids = {s: {x.id for x in v} for s, v in spk.items()}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    voices = {s: {x.voice for x in v} for s, v in spk.items()}
    # enough voice identities exist that held-out speakers use voices unseen in training
    assert not voices["train"] & (voices["dev"] | voices["test"])
    # 8 kHz-only flite voice is never used for wideband speech
    assert all(x.voice != "kal" for v in spk.values() for x in v)
    assert make_speakers("bn", SIZES["small"], seed=0) == spk
    assert make_speakers("bn", SIZES["small"], seed=1) != spk


def test_held_out_voices_stay_unseen_when_training_speakers_outnumber_voices():
    n_voices = len(voice_identities("bn"))
    size = CorpusSize(1.0, 0.1, 0.1, n_voices + 50, 10, 20)
    spk = make_speakers("bn", size, seed=3)
    held = {x.voice for s in ("dev", "test") for x in spk[s]}
    train = spk["train"]
    assert len(train) == n_voices + 50 and not {x.voice for x in train} & held
    # speakers sharing a training voice differ in their perturbations
    by_voice: dict = {}
    for x in train:
        by_voice.setdefault(x.voice, []).append((x.rate, x.pitch, x.formant_cents))
    shared = [v for v in by_voice.values() if len(v) > 1]
    assert shared and all(len(set(v)) == len(v) for v in shared)
    with pytest.raises(DataError, match="held-out speakers"):
        make_speakers("bn", CorpusSize(1.0, 0.1, 0.1, 10, n_voices, 10), seed=0)


def test_default_size_resolves_a_one_point_wer_difference():
    plan = plan_corpus("bn", "small", seed=0)
    # ~8k test words: one word is ~0.012% and the binomial s.e. of a 20% WER is ~0.45 points
    assert plan["test"]["words"] >= 8000 and plan["dev"]["words"] >= 2400
    assert plan["test"]["speakers"] >= 20 and plan["train"]["speakers"] >= 200
    # every held-out sentence is spoken once
    for split in ("dev", "test"):
        assert plan[split]["distinct_sentences"] == plan[split]["utterances"]
    assert held_out_sentences("bn", 1.0) >= plan["test"]["utterances"]
    # held-out text is drawn to a BN-like OOV rate against the training text (the vocabulary):
    # about 1%, not the ~4% a uniform draw of fortunes gives
    for split in ("dev", "test"):
        assert 0.005 <= plan[split]["oov_rate_vs_lm_text"] <= 0.011, (split, plan[split])


def _espeak(tmp_path):
    import subprocess

    wav = str(tmp_path / "e.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", wav, "she sells sea shells by the sea shore"], check=True)
    return wav


def _log_frequency_shift(x, y, sr):
    """Scale factor between two signals' long-term spectra: the lag that best aligns
    their log-magnitude spectra on a log-frequency axis (200 Hz-6 kHz)."""
    grid = np.linspace(np.log(200.0), np.log(6000.0), 600)
    n = 1024
    win = np.hanning(n)
    f = np.fft.rfftfreq(n, 1 / sr)

    def logspec(z):  # Welch: mean periodogram of half-overlapping Hann frames
        frames = np.stack([z[i : i + n] * win for i in range(0, z.size - n, n // 2)])
        p = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
        return np.interp(grid, np.log(f[1:]), np.log(p[1:] + 1e-12))
    a, b = logspec(x), logspec(y)
    step = grid[1] - grid[0]
    lags = range(-60, 61)
    score = [np.corrcoef(a[max(0, -k): len(a) - max(0, k)], b[max(0, k): len(b) - max(0, -k)])[0, 1] for k in lags]
    return float(np.exp(step * list(lags)[int(np.argmax(score))]))


def test_formant_scaling_moves_the_spectral_envelope(tmp_path):
    wav = _espeak(tmp_path)
    out = {}
    for cents in (-250, 0, 250):
        x, sr = _run_sox(wav, str(tmp_path / f"o{cents}.wav"), ["pitch", str(cents)] if cents else [], 16000)
        assert sr == 16000
        out[cents] = x
    # +250 cents scales every frequency (formants and F0) by 2**(250/1200) = 1.155
    up = _log_frequency_shift(out[0], out[250], 16000)
    down = _log_frequency_shift(out[0], out[-250], 16000)
    assert 1.10 < up < 1.21 and 1 / 1.21 < down < 1 / 1.10


def test_channel_effects_are_seeded_and_vary_per_utterance():
    draw = lambda seed, style="bn": channel_effects(style, np.random.default_rng(seed))  # noqa: E731
    assert draw(1) == draw(1)
    assert len({tuple(draw(k)) for k in range(20)}) == 20
    bn = [draw(k) for k in range(200)]
    assert 0.2 < np.mean(["reverb" in fx for fx in bn]) < 0.5
    assert all(float(fx[fx.index("lowpass") + 1]) < 8000 for fx in bn)  # below the 16 kHz Nyquist
    assert all("reverb" not in draw(k, "swb") and "lowpass" not in draw(k, "swb") for k in range(50))


@pytest.mark.slow
def test_tiny_corpus_manifests(tiny_corpus):
    stats = json.loads((tiny_corpus.corpus_dir / "corpus_stats.json").read_text())
    texts = {s: set(tiny_corpus.transcripts(s)) for s in tiny_corpus.splits}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    lm_text = set((tiny_corpus.corpus_dir / "lm_text.txt").read_text().splitlines())
    assert texts["train"] <= lm_text and not (texts["dev"] | texts["test"]) & lm_text
    for split in tiny_corpus.splits:
        cuts = load_cuts(tiny_corpus.corpus_dir, split)
        assert len(cuts) == stats[split]["utterances"] > 0
        for cut in cuts:
            assert cut.sampling_rate == 16000
            assert cut.id == cut.supervisions[0].id and cut.id.startswith(cut.supervisions[0].speaker + "-")
            assert cut.supervisions[0].text.strip()
    assert 0.03 < stats["train"]["hours"] < 0.08


def _job(tmp_path, style, name="u"):
    spk = make_speakers(style, SIZES["tiny"], seed=0)["train"][0]
    return UtteranceJob(f"{spk.id}-{name}", "train", spk, "the quick brown fox jumps over the lazy dog",
                        style, 7, str(tmp_path / f"{name}.flac"))


def test_render_is_deterministic(tmp_path):
    a = render_utterance(_job(tmp_path / "a", "bn"))
    b = render_utterance(_job(tmp_path / "b", "bn"))
    assert a == b
    xa, _ = sf.read(tmp_path / "a" / "u.flac")
    xb, _ = sf.read(tmp_path / "b" / "u.flac")
    np.testing.assert_array_equal(xa, xb)


def test_swb_style_is_telephone_band(tmp_path):
    res = render_utterance(_job(tmp_path, Style.SWB))
    assert res["sr"] == 8000
    x, sr = sf.read(tmp_path / "u.flac")
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / sr)
    in_band = spec[(f > 400) & (f < 3300)].sum()
    assert spec[f > 3800].sum() < 0.01 * in_band
    assert spec[f < 150].sum() < 0.01 * in_band
