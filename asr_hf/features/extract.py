"""Kaldi-compatible log-mel filterbank and MFCC through lhotse's extractor API.

The numerics are ``torchaudio.compliance.kaldi`` (Kaldi's ``compute-fbank-feats``
/ ``compute-mfcc-feats`` re-implemented in torch); lhotse supplies the
extractor registry, manifests and compact lilcom storage.  Waveforms are
scaled to the 16-bit integer range as Kaldi reads them, so the log energies
match Kaldi's for the same options.  With ``snip_edges=True`` (Kaldi's default)
an utterance of ``n`` samples has ``1 + (n - window) // shift`` frames.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from lhotse import CutSet, LilcomChunkyWriter
from lhotse.audio.backend import audio_backend
from lhotse.features.base import FeatureExtractor, register_extractor
from tqdm import tqdm

from asr_hf.data.paths import cuts_file, feature_config_path, feature_storage_dir, skipped_path
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done
from asr_hf.utils.procs import pool_kwargs

log = logging.getLogger(__name__)

INT16_SCALE = 32768.0


@dataclass
class KaldiFbankConfig:
    """Options of Kaldi's compute-fbank-feats (the papers: 40 log-mel bins)."""

    num_mel_bins: int = 40
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    dither: float = 0.0  # 0 keeps features deterministic; Kaldi's default is 1.0
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist
    use_energy: bool = False
    snip_edges: bool = True
    preemphasis_coefficient: float = 0.97


@dataclass
class KaldiMfccConfig:
    """Options of Kaldi's compute-mfcc-feats as GMM recipes use them."""

    num_ceps: int = 13
    num_mel_bins: int = 23
    frame_length: float = 25.0
    frame_shift: float = 10.0
    dither: float = 0.0
    low_freq: float = 20.0
    high_freq: float = 0.0
    use_energy: bool = False
    cepstral_lifter: float = 22.0
    snip_edges: bool = True
    preemphasis_coefficient: float = 0.97


def _as_kaldi_wave(samples: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if x.dim() == 1:
        x = x.unsqueeze(0)
    return x[:1] * INT16_SCALE


@register_extractor
class KaldiFbank(FeatureExtractor):
    """Log-mel filterbank, ``(T, num_mel_bins)``."""

    name = "asr_hf_kaldi_fbank"
    config_type = KaldiFbankConfig

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift / 1000.0

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins

    def extract(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        from torchaudio.compliance import kaldi

        opts = asdict(self.config)
        return kaldi.fbank(_as_kaldi_wave(samples), sample_frequency=float(sampling_rate), **opts).numpy()


@register_extractor
class KaldiMfcc(FeatureExtractor):
    """MFCC, ``(T, num_ceps)``."""

    name = "asr_hf_kaldi_mfcc"
    config_type = KaldiMfccConfig

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift / 1000.0

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_ceps

    def extract(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        from torchaudio.compliance import kaldi

        opts = asdict(self.config)
        return kaldi.mfcc(_as_kaldi_wave(samples), sample_frequency=float(sampling_rate), **opts).numpy()


EXTRACTORS = {"fbank": KaldiFbank, "mfcc": KaldiMfcc}


def make_extractor(kind: str, **options) -> FeatureExtractor:
    """``make_extractor("fbank", num_mel_bins=40)``."""
    try:
        cls = EXTRACTORS[kind]
    except KeyError:
        raise ValueError(f"unknown feature kind {kind!r}; choose from {sorted(EXTRACTORS)}") from None
    return cls(cls.config_type(**options))


def kaldi_num_frames(num_samples: int, sampling_rate: int, frame_length_ms: float = 25.0,
                     frame_shift_ms: float = 10.0, snip_edges: bool = True) -> int:
    """Kaldi's frame count (feature-window.cc NumFrames)."""
    window = int(sampling_rate * frame_length_ms / 1000)
    shift = int(sampling_rate * frame_shift_ms / 1000)
    if snip_edges:
        return 0 if num_samples < window else 1 + (num_samples - window) // shift
    return int((num_samples + shift // 2) // shift)


def _check_audio(cut, audio: np.ndarray, sampling_rate: Optional[int]) -> None:
    src = _source(cut)
    if sampling_rate is not None and cut.sampling_rate != sampling_rate:
        raise DataError(src, f"sampling rate {cut.sampling_rate} Hz, expected {sampling_rate} Hz")
    if audio.size == 0:
        raise DataError(src, "empty audio")
    if not np.all(np.isfinite(audio)):
        raise DataError(src, "audio has NaN/inf samples")
    expected = cut.num_samples
    if expected is not None and abs(audio.shape[-1] - expected) > 0.01 * cut.sampling_rate:
        raise DataError(src, f"truncated audio: {audio.shape[-1]} samples, manifest says {expected}")


def _attach_features(cut, feats: np.ndarray, extractor: FeatureExtractor, writer) -> object:
    """Store ``feats`` and return the cut with a Features manifest.

    Kaldi's ``snip_edges`` frame count is ``1 + (n - window) // shift`` while
    lhotse derives frames from duration, so the feature cut's duration is set
    to ``T * shift``: both then agree on ``T`` (the audio after the last full
    window, under one window long, is not covered by any frame anyway).
    """
    from lhotse.features import Features
    from lhotse.utils import fastcopy

    shift = extractor.frame_shift
    num_frames = int(feats.shape[0])
    duration = round(num_frames * shift, 6)
    key = writer.write(cut.id, feats)
    manifest = Features(
        type=extractor.name,
        num_frames=num_frames,
        num_features=int(feats.shape[1]),
        frame_shift=shift,
        sampling_rate=cut.sampling_rate,
        start=cut.start,
        duration=duration,
        storage_type=writer.name,
        storage_path=str(writer.storage_path),
        storage_key=key,
        channels=0,
    )
    sups = [fastcopy(s, duration=min(s.duration, duration - s.start)) for s in cut.supervisions]
    return fastcopy(cut, duration=duration, features=manifest, supervisions=sups)


def _source(cut) -> str:
    """The audio file of ``cut`` (its id when it has no recording)."""
    return str(cut.recording.sources[0].source) if cut.has_recording else cut.id


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of a reading error, on one line.

    lhotse re-raises errors as ``type(e)(f"{e}\n[extra info] When calling: ...")`` (which
    for exception types whose constructor takes no message, e.g. soundfile's
    ``LibsndfileError``, itself fails with ``TypeError: an integer is required``, the real
    error being the context), appends the whole manifest and a "Please report this issue
    in Lhotse" paragraph; keep the first cause and the facts, drop the rest.
    """
    exc = _unwrap(exc)
    text = (_safe_str(exc) or "").split("\n[extra info]", 1)[0]
    text = text.split("Set LHOTSE_AUDIO_LOADING_EXCEPTION_VERBOSE", 1)[0]
    m = re.search(r"diff=(-?\d+), audio.shape=\((\d+), (\d+)\)", text)
    if "declared samples" in text and m:  # lhotse's own count check
        got = int(m.group(3))
        return f"truncated audio: {got} samples, manifest says {got + int(m.group(1))}"
    text = re.split(r"This could be internal Lhotse's error|Please report this issue", text, maxsplit=1)[0]
    text = " ".join(text.split()).rstrip(" .")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _safe_str(exc: BaseException) -> Optional[str]:
    try:
        return str(exc)
    except Exception:  # e.g. a LibsndfileError rebuilt by lhotse with a message as its code
        return None


def _unwrap(exc: BaseException) -> BaseException:
    """The original error under lhotse's ``rich_exception_info`` re-raises."""
    for _ in range(16):
        ctx = exc.__context__
        if ctx is None:
            break
        text, ctx_text = _safe_str(exc), _safe_str(ctx)
        rewrapped = text is None or "[extra info]" in text
        failed_rewrap = isinstance(exc, TypeError) and (ctx_text is None or "[extra info]" in ctx_text)
        if not (rewrapped or failed_rewrap):
            break
        exc = ctx
    return exc


def wav_truncation(path: Pathlike) -> Optional[str]:
    """See :func:`_wav_truncation`; read once per file and worker (a recording's segments,
    e.g. every utterance of a BN episode, share its header)."""
    st = os.stat(path)
    return _wav_truncation(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _wav_truncation(path: str, size: int, mtime_ns: int) -> Optional[str]:
    """The problem with a RIFF/WAVE file whose ``data`` chunk is declared longer than the
    bytes the file holds (a copy cut short), else ``None``.

    libsndfile silently clamps such a file to the bytes present, so neither
    ``Recording.from_file`` nor decoding notices; the header is the only witness.  A data
    size of 0 or 0xFFFFFFFF (streaming writers that never patched the header) is unknown,
    not a truncation.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        frame_bytes = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, clen = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"fmt ":
                fmt = f.read(min(clen, 16))
                if len(fmt) >= 16:
                    channels = int.from_bytes(fmt[2:4], "little")
                    bits = int.from_bytes(fmt[14:16], "little")
                    frame_bytes = channels * ((bits + 7) // 8)
                f.seek(clen - len(fmt) + (clen & 1), os.SEEK_CUR)
            elif cid == b"data":
                held = size - f.tell()
                if clen in (0, 0xFFFFFFFF) or held >= clen:
                    return None
                if frame_bytes:
                    return (f"truncated WAV: the header declares {clen // frame_bytes} samples, "
                            f"the file holds {held // frame_bytes}")
                return f"truncated WAV: the header declares {clen} data bytes, the file holds {held}"
            else:
                f.seek(clen + (clen & 1), os.SEEK_CUR)


def load_cut_audio(cut, downmix: bool = False, channel_selected: bool = False) -> np.ndarray:
    """The cut's samples ``(1, n)``, or a one-line :class:`DataError` naming the file: "not
    found" for a missing file, "truncated WAV" for one shorter than its header says,
    "unreadable audio (...)" for one no backend can decode, and a multi-channel recording
    unless ``downmix`` (then the channels' average; a recipe never picks one channel silently).

    ``channel_selected``: the cut deliberately takes one channel (a Switchboard side: its
    recording has cuts on several channels, or it names a channel other than 0); it is read
    as that channel, never refused or averaged.
    """
    channel_selected = channel_selected or (isinstance(cut.channel, int) and cut.channel != 0)
    if cut.has_recording:
        for src in cut.recording.sources:
            if src.type == "file" and not Path(src.source).is_file():
                raise DataError(str(src.source), "not found")
            if src.type == "file":
                problem = wav_truncation(src.source)
                if problem:
                    raise DataError(str(src.source), problem)
        channels = cut.recording.num_channels
        if channels > 1 and not downmix and not channel_selected:
            raise DataError(
                _source(cut),
                f"{channels}-channel audio (cut {cut.id}); features are single-channel: "
                "pass --downmix (asr-hf features) to average the channels, or split the channels into cuts",
            )
    try:
        if cut.has_recording and cut.recording.num_channels > 1 and not channel_selected:
            audio = cut.recording.load_audio(offset=cut.start, duration=cut.duration)
            return audio.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        return cut.load_audio()
    except DataError:
        raise
    except Exception as exc:  # soundfile/lhotse errors on corrupt files
        src = _source(cut)
        hint = ""
        if src.endswith(".sph") and not shutil.which("sph2pipe"):
            hint = " (shorten-compressed SPHERE needs sph2pipe on PATH: `lhotse install-sph2pipe`)"
        raise DataError(src, f"unreadable audio ({_one_line(exc)}){hint}") from exc


def _window_samples(extractor: FeatureExtractor, sampling_rate: int) -> int:
    return int(sampling_rate * extractor.config.frame_length / 1000)


def extract_cut(cut, extractor: FeatureExtractor, sampling_rate: Optional[int] = None,
                downmix: bool = False, channel_selected: bool = False) -> np.ndarray:
    """Checked audio of ``cut`` -> features ``(T, dim)``; a :class:`DataError` naming the
    cut for audio shorter than one analysis window (torchaudio would assert).  ``downmix``:
    see :func:`load_cut_audio`."""
    audio = load_cut_audio(cut, downmix=downmix, channel_selected=channel_selected)
    _check_audio(cut, audio, sampling_rate)
    window = _window_samples(extractor, cut.sampling_rate)
    n = int(audio.shape[-1])
    if n < window:
        raise DataError(
            cut.id,
            f"audio shorter than one analysis window ({n} samples < {window}, "
            f"{extractor.config.frame_length:g} ms at {cut.sampling_rate} Hz)",
        )
    try:
        feats = extractor.extract(audio, cut.sampling_rate)
    except Exception as exc:
        raise DataError(cut.id, f"feature extraction failed ({_one_line(exc)})") from exc
    if feats.shape[0] == 0:
        raise DataError(cut.id, "audio shorter than one analysis window")
    return feats


def _extract_chunk(args) -> tuple[list, list[tuple[str, str]]]:
    cuts, extractor, storage_path, sampling_rate, skip_bad, downmix, per_channel = args
    torch.set_num_threads(1)
    done, bad = [], []
    # lhotse reads .sph only through the sph2pipe binary; without it, libsndfile
    # reads uncompressed NIST SPHERE (and every other format we use).
    backend = contextlib.nullcontext() if shutil.which("sph2pipe") else audio_backend("LibsndfileBackend")
    with backend, LilcomChunkyWriter(storage_path) as writer:
        for cut in cuts:
            try:
                feats = extract_cut(cut, extractor, sampling_rate, downmix=downmix,
                                    channel_selected=cut.recording_id in per_channel)
                done.append(_attach_features(cut, feats, extractor, writer))
            except DataError as exc:
                msg = " ".join(str(exc).split())  # skipped_<split>.txt: one line per cut
                if not skip_bad:
                    return [], [(cut.id, msg), ("__fatal__", "")]
                bad.append((cut.id, msg))
    return done, bad


def compute_features(
    cuts: CutSet,
    kind: str,
    out_dir: Pathlike,
    split: str,
    jobs: Optional[int] = None,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
    progress: bool = True,
    downmix: bool = False,
    **options,
) -> CutSet:
    """Extract and store features for ``cuts``; write ``out_dir/cuts_<split>.jsonl.gz``.

    Args:
        cuts: raw-audio cuts.
        kind: ``"fbank"`` or ``"mfcc"``.
        out_dir: feature directory (``feats_<split>/`` holds lilcom archives).
        split: split name used in file names.
        jobs: worker processes (default: all cores).
        sampling_rate: if given, every recording must have it.
        skip_bad: skip (and list in ``skipped_<split>.txt``, one line per cut) missing,
            unreadable, truncated, empty, too short (under one window), wrong-rate or
            multi-channel audio instead of stopping.
        downmix: average the channels of multi-channel recordings (default: refuse them).
        options: extractor options (``num_mel_bins=...``).

    Returns:
        The feature cuts.  On error nothing is left in ``out_dir`` for this split.
    """
    out_dir = Path(out_dir).resolve()  # manifests store absolute feature paths
    marker = f"{split}"
    target = cuts_file(out_dir, split)
    extractor = make_extractor(kind, **options)
    wanted_config = {"kind": kind, **{k: options[k] for k in sorted(options)}}
    if downmix:  # only when set, so feature dirs made before the option stay valid
        wanted_config["downmix"] = True
    config_path = feature_config_path(out_dir, split)
    if is_done(out_dir, marker) and target.is_file():
        if not config_path.is_file():  # written before the marker: an older asr_hf made this split
            raise DataError(str(target), f"finished features with no record of their options ({config_path.name} "
                                         f"missing); remove {out_dir} (or use another --out) to recompute")
        made = json.loads(config_path.read_text())
        if made != wanted_config:
            raise DataError(
                str(target),
                f"stale: made with {json.dumps(made, sort_keys=True)} but asked for "
                f"{json.dumps(wanted_config, sort_keys=True)}; remove {out_dir} (or use another --out) to recompute",
            )
        existing = CutSet.from_file(target)
        skipped = skipped_path(out_dir, split)
        had = set(existing.ids)
        if skipped.is_file():
            had |= {line.split("\t", 1)[0] for line in skipped.read_text().splitlines() if line}
        wanted = {c.id for c in cuts}
        if had != wanted:
            extra = sorted(wanted - had) or sorted(had - wanted)
            raise DataError(
                str(target),
                f"stale: made from {len(had)} cuts but the input now has {len(wanted)} (e.g. {extra[0]}; "
                f"speed perturbation or the corpus changed); remove {out_dir} to recompute",
            )
        log.info("features %s already complete", target)
        return existing
    cut_list = list(cuts)
    if not cut_list:
        raise DataError(split, "no cuts to extract features from")
    if sampling_rate is None:  # one rate per split: 8 and 16 kHz must not mix silently
        first = {}
        for c in cut_list:
            first.setdefault(c.sampling_rate, c)
        if len(first) > 1:
            (r0, c0), (r1, c1) = sorted(first.items())[:2]
            raise DataError(
                _source(c1),
                f"sampling rate {r1} Hz, but {_source(c0)} in the same split is {r0} Hz "
                f"(rates in {split}: {sorted(first)}); resample, or pass --sampling-rate to require one",
            )
    dup = _duplicates(c.id for c in cut_list)
    if dup:
        raise DataError(dup[0], f"duplicate cut id ({len(dup)} duplicates in {split})")
    # recordings whose channels are cut separately (Switchboard's sides): not a silent channel 0
    used: dict[str, set] = {}
    for c in cut_list:
        if c.has_recording and isinstance(c.channel, int):
            used.setdefault(c.recording_id, set()).add(c.channel)
    per_channel = frozenset(r for r, chans in used.items() if len(chans) > 1)
    jobs = jobs or os.cpu_count() or 1
    n_chunks = max(1, min(len(cut_list), jobs * 4))
    size = math.ceil(len(cut_list) / n_chunks)
    chunks = [cut_list[i : i + size] for i in range(0, len(cut_list), size)]
    feats_dir = feature_storage_dir(out_dir, split)
    with atomic_output(feats_dir, is_dir=True) as tmp_dir:
        tasks = [
            (CutSet.from_cuts(ch), extractor, str(tmp_dir / f"part{i:04d}"), sampling_rate, skip_bad, downmix,
             per_channel)
            for i, ch in enumerate(chunks)
        ]
        done, bad = [], []
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 **pool_kwargs()) as pool:
            for res, b in tqdm(pool.map(_extract_chunk, tasks), total=len(tasks),
                               desc=f"{kind} {split}", disable=not progress):
                if b and b[-1][0] == "__fatal__":
                    item, msg = b[0]
                    raise DataError(item, msg.split(": ", 1)[-1] if msg.startswith(item) else msg)
                done.extend(res)
                bad.extend(b)
        # Point the stored features at the final directory name.
        fixed = []
        for c in done:
            c.features.storage_path = str(feats_dir / Path(c.features.storage_path).name)
            fixed.append(c)
    for cut_id, msg in bad:
        log.warning("skipped %s: %s", cut_id, msg)
    if not fixed:
        raise DataError(split, "every cut was bad; nothing extracted")
    out = CutSet.from_cuts(fixed).sort_by_recording_id()
    with atomic_output(target) as tmp:
        out.to_file(tmp)
    if bad:
        with atomic_output(skipped_path(out_dir, split)) as tmp:
            tmp.write_text("".join(f"{c}\t{m}\n" for c, m in bad))
    with atomic_output(config_path) as tmp:
        tmp.write_text(json.dumps(wanted_config, sort_keys=True))
    mark_done(out_dir, marker)
    log.info("%s %s: %d cuts (%d skipped), dim %d", kind, split, len(out), len(bad),
             extractor.feature_dim(fixed[0].sampling_rate))
    return out


def _duplicates(ids) -> list[str]:
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    return dup


def remove_features(out_dir: Pathlike, split: str) -> None:
    """Delete one split's features (manifest, archives, marker)."""
    out_dir = Path(out_dir)
    shutil.rmtree(feature_storage_dir(out_dir, split), ignore_errors=True)
    for p in (cuts_file(out_dir, split), out_dir / f".{split}.done", feature_config_path(out_dir, split)):
        p.unlink(missing_ok=True)
