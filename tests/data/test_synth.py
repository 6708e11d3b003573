import json

import numpy as np
import pytest
import soundfile as sf

from asr_hf.data.synth import (
    SIZES,
    Style,
    UtteranceJob,
    load_cuts,
    make_speakers,
    render_utterance,
)


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
