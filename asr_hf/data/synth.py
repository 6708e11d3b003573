"""Synthetic multi-speaker corpora in Broadcast-News and Switchboard styles.

(About 600 lines: voices, channel effects, text pools and the corpus plan are one generator;
the sox/espeak-ng helpers are small.)

The real LDC corpora are licensed, so the default recipes run on speech made
here with Debian's synthesizers: espeak-ng (English accents x voice variants)
and flite (its built-in voices), plus signal-level perturbation with sox.
No other speech engine is used, so that generalisation to unseen synthesizers
can be tested separately.

Speaker diversity (what makes held-out voices generalise):

* every espeak-ng accent x variant identity that sounds human, plus flite's
  voices; dev and test identities are drawn first and never appear in
  training (training speakers reuse training identities only when the split
  needs more speakers than there are identities, and then differ in the
  perturbations below);
* per speaker: speaking rate, F0 (espeak ``-p`` / flite ``int_f0_target_mean``),
  word gap, level, and a vocal-tract-like spectral scaling (sox ``pitch``,
  which moves formants and F0 together by the same factor, so combined with
  the engine's F0 the two vary independently);
* per utterance: a channel (BN: microphone colouring with random high/low-pass
  corners, two peaking EQ bands, room reverberation in some utterances;
  SWB: a handset EQ before the telephone band), then the style's noise.

Two styles mirror the papers' tasks:

* ``bn``: 16 kHz wideband, broadcast-like background (pink noise plus a music
  bed of slowly changing chords) at 5-30 dB SNR.
* ``swb``: 8 kHz telephone speech: band-limited to ~300-3400 Hz, mu-law coded,
  faster speech, noisier (0-20 dB SNR, mains hum).

Generation is deterministic given the seed (each utterance has its own RNG
derived from the seed and its index) and runs in parallel processes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asr_hf.data.paths import SPLITS, lm_text_path, manifest_name, manifests_dir
from asr_hf.data.text import read_fortunes, select_sentences, split_held_out
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done
from asr_hf.utils.procs import pool_kwargs

log = logging.getLogger(__name__)


# espeak-ng English accents (its own voices; the MBROLA ones need extra data files).
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
    "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
# Voice variants (files under espeak-ng-data/voices/!v) that sound human enough:
# the robotic, whispered, croaking and novelty ones are left out.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "Alex", "Alicia", "Andrea", "Andy",
    "Annie", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario",
    "Michael", "Mike", "Nguyen", "adam", "anika", "announcer", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave",
    "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "linda", "marcelo", "max", "michel",
    "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
    "steph", "steph2", "steph3", "travis", "victor", "zac",
)  # fmt: skip
# flite voices and their native rates; kal is 8 kHz so it only serves telephone speech.
FLITE_VOICES = {"kal16": 16000, "awb": 16000, "rms": 16000, "slt": 16000, "kal": 8000}


# dev/test OOV rate the synthetic corpora are drawn to: about a BN system's with a 64k vocabulary
HELD_OUT_OOV_RATE = 0.01


class Style:
    """Acoustic conditions of a corpus style."""

    BN = "bn"
    SWB = "swb"


STYLE_RATE = {Style.BN: 16000, Style.SWB: 8000}


@dataclass(frozen=True)
class CorpusSize:
    """How much to synthesize.

    Attributes:
        train_hours / dev_hours / test_hours: target audio per split.
        train_speakers / dev_speakers / test_speakers: distinct speakers per split.
    """

    train_hours: float
    dev_hours: float
    test_hours: float
    train_speakers: int
    dev_speakers: int
    test_speakers: int
    lm_sentences: Optional[int] = None  # cap on LM text (spoken training sentences first); None: all
    # dev/test sentences are drawn so that at most this fraction of their words is missing from
    # the training text (the recognition vocabulary); None: uniform draw (~4% OOV on fortunes)
    held_out_oov_rate: Optional[float] = HELD_OUT_OOV_RATE


SIZES: dict[str, CorpusSize] = {
    # a few minutes: unit and smoke tests
    "tiny": CorpusSize(0.05, 0.01, 0.01, 8, 2, 2, lm_sentences=400),
    # the README demo and open benchmark: ~200 training voices; dev >= 0.3 h for tuning and
    # test >= 1 h (~8.5k words) so that a 1-point WER difference can be resolved.  Held-out
    # voices speak faster than the planning average: 0.3 h / 1.0 h planned gave 0.289 h /
    # 0.966 h (seed 0), and 10 dev speakers could not resolve one ladder step on dev.
    "small": CorpusSize(1.0, 0.45, 1.05, 200, 16, 24),
    "medium": CorpusSize(10.0, 0.5, 2.0, 800, 16, 40),
    # the papers' training-set sizes
    "bn50": CorpusSize(50.0, 2.0, 3.0, 1500, 30, 60),
    "swb300": CorpusSize(300.0, 2.0, 3.0, 3000, 30, 60),
}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an engine voice plus its speaking style.

    Attributes:
        formant_cents: spectral scaling applied after synthesis (sox ``pitch``,
            in cents: +100 scales formants and F0 up by 2**(1/12)); a stand-in
            for vocal-tract length differences between speakers.
    """

    id: str
    engine: str  # "espeak" or "flite"
    voice: str  # espeak "accent+variant" or flite voice name
    rate: float  # espeak words per minute, or flite duration stretch (1 = native)
    pitch: float  # espeak pitch 0-99, or flite mean F0 in Hz
    word_gap: int  # espeak extra pause between words, units of 10 ms
    level_db: float  # speech level in dBFS after synthesis
    formant_cents: float = 0.0

    def command(self, text: str, wav_path: str) -> list[str]:
        if self.engine == "espeak":
            return [
                "espeak-ng", "-v", self.voice, "-s", str(int(self.rate)), "-p", str(int(self.pitch)),
                "-g", str(self.word_gap), "-w", wav_path, text,
            ]  # fmt: skip
        return [
            "flite", "-voice", self.voice, "--setf", f"duration_stretch={self.rate:.3f}",
            "--setf", f"int_f0_target_mean={self.pitch:.1f}", "-t", text, "-o", wav_path,
        ]  # fmt: skip


def voice_identities(style: str) -> list[tuple[str, str]]:
    """Every (engine, voice) identity usable for a style, in a fixed order."""
    ids = [("espeak", f"{a}+{v}") for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    ids += [("flite", v) for v, sr in FLITE_VOICES.items() if sr >= STYLE_RATE[style] or style == Style.SWB]
    return ids


def make_speakers(style: str, size: CorpusSize, seed: int) -> dict[str, list[Speaker]]:
    """Draw disjoint speaker sets for train/dev/test.

    Distinct (engine voice) identities are shuffled; test and dev take theirs
    first, so a held-out speaker's voice is never a training voice.  Training
    speakers cycle through the remaining identities; when there are more
    training speakers than identities, speakers sharing a voice still differ
    in rate, F0, formant scaling and level.

    Raises:
        DataError: if held-out speakers would use up every identity.
    """
    rng = random.Random(f"speakers-{style}-{seed}")
    identities = voice_identities(style)
    rng.shuffle(identities)
    n_held = size.dev_speakers + size.test_speakers
    if n_held >= len(identities):
        raise DataError(f"size {size}", f"{n_held} held-out speakers but only {len(identities)} voice identities")
    pools = {
        "test": identities[: size.test_speakers],
        "dev": identities[size.test_speakers : n_held],
        "train": identities[n_held:],
    }
    counts = {"train": size.train_speakers, "dev": size.dev_speakers, "test": size.test_speakers}
    fast = style == Style.SWB
    out: dict[str, list[Speaker]] = {}
    k = 0
    for split in SPLITS:
        spks = []
        for i in range(counts[split]):
            engine, voice = pools[split][i % len(pools[split])]
            if engine == "espeak":
                rate = rng.uniform(170, 230) if fast else rng.uniform(135, 185)
                pitch = rng.uniform(15, 85)
            else:
                rate = rng.uniform(0.75, 0.95) if fast else rng.uniform(0.9, 1.15)
                pitch = rng.uniform(90, 130) if voice in ("kal", "kal16", "awb", "rms") else rng.uniform(150, 210)
            spks.append(
                Speaker(
                    id=f"{style}{k:04d}",
                    engine=engine,
                    voice=voice,
                    rate=round(rate, 3),
                    pitch=round(pitch, 1),
                    word_gap=rng.choice((0, 0, 1, 2)) if not fast else 0,
                    level_db=round(rng.uniform(-32, -20), 1),
                    formant_cents=round(rng.uniform(-250.0, 250.0), 1),
                )
            )
            k += 1
        out[split] = spks
    return out


@dataclass(frozen=True)
class UtteranceJob:
    """Everything one worker needs to make one utterance (picklable)."""

    utt_id: str
    split: str
    speaker: Speaker
    text: str
    style: str
    seed: int
    path: str


def _run_engine(spk: Speaker, text: str, tmp_wav: str) -> None:
    proc = subprocess.run(spk.command(text, tmp_wav), capture_output=True, timeout=120)
    if proc.returncode != 0 or not os.path.exists(tmp_wav):
        raise RuntimeError(f"{spk.engine} failed for voice {spk.voice}: {proc.stderr.decode()[:200]}")


def channel_effects(style: str, rng: np.random.Generator) -> list[str]:
    """sox effects of one utterance's recording channel (drawn from ``rng``).

    BN: microphone colouring (high-pass 60-250 Hz, low-pass 4.5-7.8 kHz), two
    peaking EQ bands of +-8 dB between 200 Hz and 5 kHz, and room reverberation
    in about a third of the utterances.  SWB: a handset EQ (two +-6 dB bands,
    300 Hz-3 kHz); the telephone band itself is applied after the noise.
    """
    fx: list[str] = []
    if style == Style.BN:
        fx += ["highpass", f"{rng.uniform(60, 250):.0f}", "lowpass", f"{rng.uniform(4500, 7800):.0f}"]
        lo, hi, gain = 200.0, 5000.0, 8.0
    else:
        lo, hi, gain = 300.0, 3000.0, 6.0
    for _ in range(2):
        f = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        fx += ["equalizer", f"{f:.0f}", f"{rng.uniform(0.7, 2.0):.2f}q", f"{rng.uniform(-gain, gain):+.1f}"]
    if style == Style.BN and rng.random() < 0.35:
        fx += ["reverb", f"{rng.uniform(10, 50):.0f}", "50", f"{rng.uniform(20, 80):.0f}"]
    return fx


def _run_sox(in_wav: str, out_wav: str, effects: Sequence[str], out_sr: int) -> tuple[np.ndarray, int]:
    """Apply sox ``effects`` then resample to ``out_sr`` (no dither; clipping guarded)."""
    cmd = ["sox", "-D", "-G", "-V1", in_wav, "-e", "floating-point", "-b", "32", out_wav, *effects,
           "rate", "-h", str(out_sr)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    if proc.returncode != 0 or not os.path.exists(out_wav):
        raise RuntimeError(f"sox failed ({' '.join(effects)}): {proc.stderr.decode()[:200]}")
    audio, sr = sf.read(out_wav, dtype="float32", always_2d=False)
    return audio, sr


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / (np.std(x) + 1e-12)


def _music_bed(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Chords of a few harmonics that change every 1-3 s with smooth envelopes."""
    out = np.zeros(n)
    t0 = 0
    while t0 < n:
        seg = int(sr * rng.uniform(1.0, 3.0))
        t = np.arange(min(seg, n - t0)) / sr
        env = np.sin(np.pi * np.linspace(0, 1, t.size)) ** 0.5
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        for ratio in (1.0, 1.26, 1.5, 2.0):
            for h in (1, 2, 3):
                out[t0 : t0 + t.size] += env * np.sin(2 * np.pi * root * ratio * h * t) / h
        t0 += seg
    return out / (np.std(out) + 1e-12)


def _mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    p_s = np.mean(speech**2) + 1e-12
    p_n = np.mean(noise**2) + 1e-12
    return speech + noise * math.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))


def _telephone_band(x: np.ndarray, sr: int, low: float = 300.0, high: float = 3400.0) -> np.ndarray:
    """Band-limit to the telephone channel with raised-cosine edges (FFT domain)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / sr)
    gain = np.clip((f - low * 0.7) / (low * 0.3), 0, 1) * np.clip((high * 1.08 - f) / (high * 0.08), 0, 1)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    return np.fft.irfft(spec * gain, x.size)


def render_utterance(job: UtteranceJob) -> dict:
    """Synthesize, degrade and write one utterance; returns its manifest fields.

    The audio is written to a temporary name and renamed, so an existing file
    is always complete (a re-run skips it).
    """
    import torch
    import torchaudio.functional as AF

    out_sr = STYLE_RATE[job.style]
    path = Path(job.path)
    if path.is_file():
        info = sf.info(str(path))
        return {"utt_id": job.utt_id, "num_samples": info.frames, "sr": info.samplerate}
    rng = np.random.default_rng(zlib.crc32(f"{job.seed}:{job.utt_id}".encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_suffix(f".tmp{os.getpid()}.wav"))
    tmp_fx = str(path.with_suffix(f".tmp{os.getpid()}.fx.wav"))
    try:
        _run_engine(job.speaker, job.text, tmp)
        effects: list[str] = []
        if abs(job.speaker.formant_cents) >= 1.0:
            effects += ["pitch", f"{job.speaker.formant_cents:.0f}"]
        effects += channel_effects(job.style, rng)
        audio, sr = _run_sox(tmp, tmp_fx, effects, out_sr)
    finally:
        for f in (tmp, tmp_fx):
            if os.path.exists(f):
                os.unlink(f)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if sr != out_sr:
        x = AF.resample(x, sr, out_sr)
    # Leading/trailing silence of varied length, as in segmented broadcast/telephone audio.
    pad = lambda: np.zeros(int(out_sr * rng.uniform(0.15, 0.5)), dtype=np.float32)  # noqa: E731
    s = np.concatenate([pad(), x.numpy(), pad()]).astype(np.float64)
    s *= 10 ** (job.speaker.level_db / 20) / (np.sqrt(np.mean(s**2)) + 1e-12)
    n = s.size
    if job.style == Style.BN:
        noise = _pink_noise(n, rng) + rng.uniform(0.3, 1.5) * _music_bed(n, out_sr, rng)
        y = _mix_at_snr(s, noise, rng.uniform(5.0, 30.0))
    else:
        t = np.arange(n) / out_sr
        hum = np.sin(2 * np.pi * 60 * t) + 0.5 * np.sin(2 * np.pi * 180 * t)
        noise = rng.standard_normal(n) + 0.3 * _pink_noise(n, rng) + rng.uniform(0, 0.5) * hum
        y = _mix_at_snr(s, noise, rng.uniform(0.0, 20.0))
        y = _telephone_band(y, out_sr)
        yt = torch.from_numpy(y.astype(np.float32))
        peak = float(yt.abs().max()) + 1e-9
        coded = AF.mu_law_decoding(AF.mu_law_encoding(yt / peak, 256), 256) * peak
        y = coded.numpy().astype(np.float64)
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y *= 0.99 / peak
    tmp_out = path.with_suffix(f".tmp{os.getpid()}.flac")
    sf.write(str(tmp_out), y.astype(np.float32), out_sr, subtype="PCM_16", format="FLAC")
    os.replace(tmp_out, path)
    return {"utt_id": job.utt_id, "num_samples": int(y.size), "sr": out_sr}


@dataclass
class CorpusText:
    """Disjoint sentence pools per split (train pool doubles as LM text)."""

    train: list[str]
    dev: list[str]
    test: list[str]


def held_out_sentences(style: str, hours: float) -> int:
    """Distinct sentences a held-out split of ``hours`` needs (15% margin, at least 600),
    so that no dev/test sentence is spoken twice."""
    per_utt = _MEAN_WORDS_PER_SENTENCE * _SECONDS_PER_WORD[style] + 0.65
    return max(600, math.ceil(hours * 3600.0 / per_utt * 1.15))


def build_text_pools(
    seed: int, dev_sentences: int = 600, test_sentences: int = 600,
    max_oov_rate: Optional[float] = HELD_OUT_OOV_RATE,
) -> CorpusText:
    """Sentences from Debian's fortunes, normalised, pronounceable, split disjointly.

    Dev and test are drawn with :func:`split_held_out` so that their OOV rate
    against the training text stays at most ``max_oov_rate``.
    """
    from asr_hf.lang.lexicon import load_cmudict

    vocab = set(load_cmudict())
    sentences = select_sentences(read_fortunes(), vocabulary=vocab)
    if len(sentences) < dev_sentences + test_sentences + 100:
        raise DataError("fortunes", f"only {len(sentences)} usable sentences; install 'fortunes'")
    parts = split_held_out(sentences, {"dev": dev_sentences, "test": test_sentences}, seed, max_oov_rate)
    if len(parts["dev"]) < dev_sentences or len(parts["test"]) < test_sentences:
        raise DataError(
            "fortunes",
            f"only {len(parts['dev'])}/{len(parts['test'])} dev/test sentences of {dev_sentences}/{test_sentences} "
            f"fit an OOV rate of {max_oov_rate}",
        )
    return CorpusText(train=parts["train"], dev=parts["dev"], test=parts["test"])


# Average speaking rate used to turn target hours into utterance counts (measured
# on the default speaker mix, plus 0.65 s of padding per utterance); the real duration is
# reported in corpus_stats.json.
_SECONDS_PER_WORD = {Style.BN: 0.36, Style.SWB: 0.26}
_MEAN_WORDS_PER_SENTENCE = 10.6  # of the usable fortunes sentences


def plan_utterances(
    style: str, size: CorpusSize, text: CorpusText, speakers: dict[str, list[Speaker]], seed: int, audio_dir: Path
) -> list[UtteranceJob]:
    rng = random.Random(f"plan-{style}-{seed}")
    jobs: list[UtteranceJob] = []
    hours = {"train": size.train_hours, "dev": size.dev_hours, "test": size.test_hours}
    pools = {"train": text.train, "dev": text.dev, "test": text.test}
    for split in SPLITS:
        pool = list(pools[split])
        rng.shuffle(pool)
        budget = hours[split] * 3600.0
        spent = 0.0
        i = 0
        spks = speakers[split]
        while spent < budget:
            sent = pool[i % len(pool)]
            spk = spks[i % len(spks)]
            utt = f"{spk.id}-{split}{i:06d}"
            jobs.append(
                UtteranceJob(utt, split, spk, sent, style, seed, str(audio_dir / split / spk.id / f"{utt}.flac"))
            )
            spent += len(sent.split()) * _SECONDS_PER_WORD[style] + 0.65
            i += 1
    return jobs


def synthesize_corpus(
    out_dir: Pathlike,
    style: str = Style.BN,
    size: str | CorpusSize = "small",
    seed: int = 0,
    jobs: Optional[int] = None,
    progress: bool = True,
) -> Path:
    """Make a synthetic corpus with lhotse manifests.

    Writes ``out_dir/audio/<split>/<speaker>/<utt>.flac``,
    ``out_dir/manifests/{recordings,supervisions,cuts}_<split>.jsonl.gz``,
    ``out_dir/lm_text.txt`` (training sentences), ``out_dir/speakers.json`` and
    ``out_dir/corpus_stats.json``; ``out_dir/.done`` marks completion and a
    completed corpus is not made again.

    Args:
        out_dir: corpus directory.
        style: ``"bn"`` or ``"swb"``.
        size: a name from :data:`SIZES` or a :class:`CorpusSize`.
        seed: everything (speakers, sentences, noise) is a function of it.
        jobs: worker processes (default: all cores).
    """
    from lhotse import AudioSource, CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    out_dir = Path(out_dir)
    if style not in STYLE_RATE:
        raise DataError(style, f"unknown style; choose from {sorted(STYLE_RATE)}")
    spec = SIZES[size] if isinstance(size, str) else size
    if is_done(out_dir):
        log.info("corpus %s already complete", out_dir)
        return out_dir
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            raise DataError(tool, "synthesizer not installed (run scripts/setup.sh)")
    text = _text_for(style, spec, seed)
    speakers = make_speakers(style, spec, seed)
    plan = plan_utterances(style, spec, text, speakers, seed, out_dir / "audio")
    log.info("synthesizing %d utterances (%s, %s) with %s jobs", len(plan), style, spec, jobs or os.cpu_count())
    results: dict[str, dict] = {}
    with ProcessPoolExecutor(max_workers=jobs or os.cpu_count(), mp_context=multiprocessing.get_context("spawn"),
                             **pool_kwargs()) as pool:
        it = pool.map(render_utterance, plan, chunksize=8)
        for res in tqdm(it, total=len(plan), desc=f"synth {style}", disable=not progress):
            results[res["utt_id"]] = res
    manifest_dir = manifests_dir(out_dir)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict] = {}
    for split in SPLITS:
        recs, sups = [], []
        for job in (j for j in plan if j.split == split):
            res = results[job.utt_id]
            recs.append(
                Recording(
                    id=job.utt_id,
                    sources=[AudioSource(type="file", channels=[0], source=str(Path(job.path).resolve()))],
                    sampling_rate=res["sr"],
                    num_samples=res["num_samples"],
                    duration=res["num_samples"] / res["sr"],
                )
            )
            sups.append(
                SupervisionSegment(
                    id=job.utt_id,
                    recording_id=job.utt_id,
                    start=0.0,
                    duration=res["num_samples"] / res["sr"],
                    channel=0,
                    text=job.text,
                    speaker=job.speaker.id,
                    language="English",
                )
            )
        rec_set = RecordingSet.from_recordings(recs)
        sup_set = SupervisionSet.from_segments(sups)
        cuts = CutSet.from_cuts(
            MonoCut(id=r.id, start=0.0, duration=r.duration, channel=0, recording=r, supervisions=[s])
            for r, s in zip(recs, sups)
        ).sort_by_recording_id()
        for name, obj in (("recordings", rec_set), ("supervisions", sup_set), ("cuts", cuts)):
            target = manifest_dir / manifest_name(name, split)
            with atomic_output(target) as tmp:
                obj.to_file(tmp)
        words = [w for s in sups for w in s.text.split()]
        stats[split] = {
            "hours": round(sum(r.duration for r in recs) / 3600, 4),
            "utterances": len(recs),
            "speakers": len({s.speaker for s in sups}),
            "words": len(words),
            "vocabulary": len(set(words)),
        }
    lm_sentences = _lm_text(text.train, {j.text for j in plan if j.split == "train"}, spec.lm_sentences)
    with atomic_output(lm_text_path(out_dir)) as tmp:
        tmp.write_text("\n".join(lm_sentences) + "\n", encoding="utf-8")
    with atomic_output(out_dir / "speakers.json") as tmp:
        tmp.write_text(
            json.dumps({k: [dataclasses.asdict(s) for s in v] for k, v in speakers.items()}, indent=1)
        )
    lm_vocab = {w for s in lm_sentences for w in s.split()}
    for split in ("dev", "test"):
        sents = text.dev if split == "dev" else text.test
        used = {j.text for j in plan if j.split == split}
        toks = [w for s in sents if s in used for w in s.split()]
        stats[split]["oov_rate_vs_lm_text"] = round(sum(w not in lm_vocab for w in toks) / max(len(toks), 1), 4)
    stats["lm_text"] = {"sentences": len(lm_sentences), "words": sum(len(s.split()) for s in lm_sentences),
                        "vocabulary": len(lm_vocab)}
    stats["style"] = style
    stats["seed"] = seed
    stats["size"] = dataclasses.asdict(spec)
    with atomic_output(out_dir / "corpus_stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=1))
    mark_done(out_dir)
    log.info("corpus stats: %s", json.dumps(stats))
    return out_dir


def plan_corpus(style: str = Style.BN, size: str | CorpusSize = "small", seed: int = 0) -> dict:
    """Statistics of a corpus as it would be synthesized, without making audio.

    Hours are estimated from word counts (the same estimate that sizes the
    plan; real corpora come out within ~15%).  Returns per-split utterances,
    speakers, words, vocabulary, dev/test OOV rate against the LM text, plus
    the LM text itself (``lm_sentences`` list) for perplexity measurement.
    """
    spec = SIZES[size] if isinstance(size, str) else size
    text = _text_for(style, spec, seed)
    speakers = make_speakers(style, spec, seed)
    plan = plan_utterances(style, spec, text, speakers, seed, Path("/nonexistent"))
    lm = _lm_text(text.train, {j.text for j in plan if j.split == "train"}, spec.lm_sentences)
    lm_vocab = {w for s in lm for w in s.split()}
    out: dict = {"style": style, "seed": seed, "size": dataclasses.asdict(spec)}
    for split in SPLITS:
        jobs = [j for j in plan if j.split == split]
        words = [w for j in jobs for w in j.text.split()]
        out[split] = {
            "estimated_hours": round(sum(len(j.text.split()) * _SECONDS_PER_WORD[style] + 0.65 for j in jobs) / 3600, 3),
            "utterances": len(jobs),
            "speakers": len({j.speaker.id for j in jobs}),
            "distinct_sentences": len({j.text for j in jobs}),
            "words": len(words),
            "vocabulary": len(set(words)),
        }
        if split != "train":
            out[split]["oov_rate_vs_lm_text"] = round(sum(w not in lm_vocab for w in words) / max(len(words), 1), 4)
    out["lm_text"] = {"sentences": len(lm), "words": sum(len(x.split()) for x in lm), "vocabulary": len(lm_vocab)}
    out["dev_sentences"] = [j.text for j in plan if j.split == "dev"]
    out["lm_sentences"] = lm
    return out


def _text_for(style: str, spec: CorpusSize, seed: int) -> CorpusText:
    return build_text_pools(
        seed,
        held_out_sentences(style, spec.dev_hours),
        held_out_sentences(style, spec.test_hours),
        spec.held_out_oov_rate,
    )


def _lm_text(pool: list[str], spoken: set[str], cap: Optional[int]) -> list[str]:
    """LM training sentences: the whole training pool, or (capped) the spoken ones first."""
    if cap is None or cap >= len(pool):
        return list(pool)
    first = [s for s in pool if s in spoken]
    rest = [s for s in pool if s not in spoken]
    return first + rest[: max(0, cap - len(first))]


def describe_sizes() -> Iterable[str]:
    for name, s in SIZES.items():
        yield f"{name}: {s.train_hours} h train / {s.dev_hours} h dev / {s.test_hours} h test, " \
              f"{s.train_speakers}/{s.dev_speakers}/{s.test_speakers} speakers"
