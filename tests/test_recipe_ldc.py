"""The LDC recipes on miniature corpora in the release layouts, stages 0-10 to RESULTS.md.

* ``recipes/bn50/run.sh`` on LDC98S71 / LDC98T28 / LDC2002S11: the tiny synthetic corpus's
  utterances concatenated into NIST SPHERE episodes with silence between turns, described by
  Hub4 SGML (turns, ``<time>`` segments, ``{breath}`` / ``[noise]`` markup, an ``<overlap>``,
  a segment shorter than one analysis window) and, for the eval97-style test set, an STM.
* ``recipes/swb300/run.sh`` on LDC97S62 / swb_ms98_transcriptions / LDC2002S09 / LDC2002T43:
  two speakers per two-channel 8 kHz conversation whose turns overlap, MS-State transcripts
  with ``[noise]`` / ``[laughter-word]`` markup, ``[silence]`` segments and a segment shorter
  than a window; eval2000-style references for the test conversation.

Every segment starts in the middle of its recording (an alignment stored from 0 would be
sliced at the segment's offset).  Real speech is needed because the GMMs and the DNN must
train on it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_hf.data.cuts import load_cuts

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
GAP = 0.4  # seconds of silence before and between turns


def _episodes(cuts, per_episode: int):
    """Groups of ``per_episode`` utterances, each group mixing the speakers."""
    cuts = sorted(cuts, key=lambda c: c.id)
    return [cuts[i : i + per_episode] for i in range(0, len(cuts), per_episode)]


SHORT = 0.015  # a segment shorter than one 25-ms analysis window: data preparation drops it


def _recording(group, rng):
    """Concatenate the group's audio with silence; returns ``(samples, [(start, end, cut), ...])``."""
    parts, turns, t = [np.zeros(int(GAP * RATE), np.float32)], [], GAP
    for c in group:
        audio = c.load_audio()[0].astype(np.float32)
        turns.append((t, t + len(audio) / RATE, c))
        parts += [audio, (rng.standard_normal(int(GAP * RATE)) * 1e-3).astype(np.float32)]
        t += len(audio) / RATE + GAP
    return np.concatenate(parts), turns


def _write_sph(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """``samples``: float in [-1, 1], shape ``(frames,)`` or ``(frames, channels)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(samples * 32767, -32768, 32767).astype(np.int16), rate, format="NIST", subtype="PCM_16")


def _run_recipe(name: str, tmp_path: Path, args: list[str]) -> Path:
    """Run a copy of ``recipes/<name>`` (so that data/ and exp/ stay in tmp_path); returns its directory."""
    recipe = tmp_path / "recipe"
    (recipe / name).mkdir(parents=True)
    for f in ("run.sh", "conf.sh"):
        (recipe / name / f).write_text((REPO / "recipes" / name / f).read_text())
    (recipe / "common").symlink_to(REPO / "recipes" / "common")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    res = subprocess.run(["bash", str(recipe / name / "run.sh"), *args], env=env, capture_output=True, text=True,
                         timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return recipe / name


def _check_results(d: Path, systems: tuple[str, ...], ali: str) -> None:
    """Stage 8 trained on ``ali``'s alignments; every system was scored on dev and test; RESULTS.md lists the DNN."""
    summary = json.loads((d / "exp" / "dnn_sgd" / "train_summary.json").read_text())
    assert summary["optimizer"] == "sgd"
    assert f"exp/{ali}/ali" in (d / "exp" / "dnn_sgd" / "command.txt").read_text()
    for system in (*systems, "dnn_sgd"):
        for s in ("dev", "test"):
            wer = json.loads((d / "exp" / system / f"decode_{s}" / "wer.json").read_text())
            assert wer["ref_words"] > 0 and 0 <= wer["wer_percent"] <= 150, (system, s, wer)
    assert "dnn_sgd" in (d / "RESULTS.md").read_text()


#: Small systems and one short DNN, so that a whole recipe runs in a few minutes on 2 cores.
SMALL = ["--jobs", "2", "--mono-totgauss", "150", "--tri-leaves", "80", "--tri-totgauss", "300",
         "--optimizers", "sgd", "--model", "dnn_tiny", "--trainer", "cpu_demo", "--acwt-sweep-gmm", "0.08,0.12",
         "--acwt-sweep-dnn", "0.08,0.12", "--decode-opts", "--beam 10 --lattice-beam 6 --max-active 1000"]


def make_ldc_bn(corpus_dir: Path, root: Path) -> tuple[Path, Path, Path]:
    """LDC98S71 / LDC98T28 from the train and dev speakers, LDC2002S11 from the test speakers."""
    rng = np.random.default_rng(0)
    audio_dir, trans_dir, eval_dir = root / "LDC98S71", root / "LDC98T28", root / "LDC2002S11"
    train = list(load_cuts(corpus_dir, "train")) + list(load_cuts(corpus_dir, "dev"))
    for e, group in enumerate(_episodes(train, 12)):
        ep = f"e96{e:04d}"
        samples, turns = _recording(group, rng)
        _write_sph(audio_dir / "97_eng_bns_hub4" / f"{ep}.sph", samples)
        lines = [f"<episode filename={ep}.sph program=Synthetic_News language=English>",
                 f"<section type=report startTime=0.000 endTime={len(samples) / RATE:.3f}>"]
        for k, (start, end, c) in enumerate(turns):
            sup = c.supervisions[0]
            words = sup.text.split()
            lines.append(f"<turn speaker={sup.speaker} spkrtype=male startTime={start:.3f} endTime={end:.3f}>")
            if k % 3 == 1 and len(words) > 3:  # two <time> segments in one turn
                mid = start + (end - start) * 0.5
                cut_at = len(words) // 2
                lines += [f"<time sec={start:.3f}>", "{breath} " + " ".join(words[:cut_at]),
                          f"<time sec={mid:.3f}>", " ".join(words[cut_at:]) + " [noise]"]
            elif k % 7 == 3:  # a "uh" too short for one analysis window before the sentence
                lines += [f"<time sec={start:.3f}>", "uh", f"<time sec={start + SHORT:.3f}>", " ".join(words)]
            elif k % 5 == 2:
                lines += [f"<overlap startTime={start:.3f} endTime={end:.3f}>", f"<time sec={start:.3f}>",
                          " ".join(words), "</overlap>"]
            else:
                lines += [f"<time sec={start:.3f}>", " ".join(words)]
            lines.append("</turn>")
        lines += ["</section>", "</episode>", ""]
        path = trans_dir / "hub4e97_trans_980217" / "transcrp" / f"{ep}.sgml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines), encoding="iso-8859-1")
    samples, turns = _recording(list(load_cuts(corpus_dir, "test")), rng)
    evl = eval_dir / "hub4e_97" / "h4e_evl"
    _write_sph(evl / "h4e_97.sph", samples)
    stm = [f"h4e_97 1 {c.supervisions[0].speaker} {s:.3f} {e:.3f} <o,f0,male> {c.supervisions[0].text.upper()}"
           for s, e, c in turns]
    (evl / "h4e_97.stm").write_text("\n".join(stm) + "\n")
    return audio_dir, trans_dir, eval_dir


@pytest.mark.slow
def test_bn50_recipe_on_an_ldc_layout_corpus(tiny_corpus, tmp_path):
    audio, trans, eval97 = make_ldc_bn(tiny_corpus.corpus_dir, tmp_path / "ldc")
    d = _run_recipe("bn50", tmp_path, [
        "--bn-audio", str(audio), "--bn-transcripts", str(trans), "--eval97", str(eval97),
        "--bn-dev-fraction", "0.2", "--gmm-systems", "mono tri1", *SMALL, "--", "trainer.max_epochs=2"])
    # stage 0: segments start inside their recordings, the markup is gone from the text, and
    # the segments shorter than a window were dropped (features would have no frame for them)
    from lhotse import CutSet

    train = CutSet.from_file(d / "data" / "corpus" / "manifests" / "cuts_train.jsonl.gz")
    assert min(c.start for c in train) >= GAP - 0.01 and all("{" not in c.supervisions[0].text for c in train)
    assert min(c.duration for c in train) > 0.5
    # stage 8 trained on tri1's alignments of those segments (the offset bug made every one fail)
    _check_results(d, ("mono", "tri1"), "tri1")


def _resample_8k(audio: np.ndarray) -> np.ndarray:
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(audio), RATE, 8000).numpy()


def _conversation(a_cuts, b_cuts, rng):
    """Two speakers taking turns on channels A and B, each turn overlapping the previous one's
    last 0.3 s; returns ``(samples (frames, 2) at 8 kHz, {"A": [(start, end, words)], "B": [...]})``."""
    turns = {"A": [], "B": []}
    pieces = []  # (channel, start, audio)
    t = GAP
    n = min(len(a_cuts), len(b_cuts))
    order = [x for pair in zip(a_cuts, b_cuts) for x in (("A", pair[0]), ("B", pair[1]))]
    order += [("A", c) for c in a_cuts[n:]] + [("B", c) for c in b_cuts[n:]]
    for side, c in order:
        audio = _resample_8k(c.load_audio()[0].astype(np.float32))
        pieces.append((side, t, audio))
        end = t + len(audio) / 8000
        turns[side].append((t, end, c.supervisions[0].text.split()))
        t = max(end - 0.3, t + 0.5)  # the other side starts before this turn ends
    total = int((t + 1.0) * 8000) + max(len(a) for _, _, a in pieces)
    samples = (rng.standard_normal((total, 2)) * 1e-3).astype(np.float32)
    for side, start, audio in pieces:
        i = int(round(start * 8000))
        samples[i : i + len(audio), "AB".index(side)] += audio
    return samples, turns


def _ms98_lines(side_id: str, turns, total_s: float) -> list[str]:
    """MS-State ``*-trans.text`` lines: [silence] between turns, markup, one too-short segment."""
    lines, t, k = [], 0.0, 0

    def add(start, end, text):
        nonlocal k
        k += 1
        lines.append(f"{side_id}-ms98-a-{k:04d} {start:.6f} {end:.6f} {text}")

    for j, (start, end, words) in enumerate(turns):
        if start > t:
            add(t, start, "[silence]")
        words = list(words)
        if j % 3 == 0:
            words[0] = f"[laughter-{words[0]}]"
        if j % 3 == 1:
            words = ["[noise]", *words, "[vocalized-noise]"]
        if j % 4 == 2:  # "uh" shorter than a window right before the turn
            add(start, start + SHORT, "uh")
            start += SHORT
        add(start, end, " ".join(words))
        t = end
    if total_s > t:
        add(t, total_s, "[silence]")
    return lines


def make_ldc_swbd(corpus_dir: Path, root: Path) -> tuple[Path, Path, Path, Path]:
    """LDC97S62 + ms98 transcripts from the train and dev speakers (a pair per conversation),
    LDC2002S09 / LDC2002T43 (eval2000) from the test speakers."""
    from collections import defaultdict

    rng = np.random.default_rng(0)
    audio_dir, trans_dir = root / "LDC97S62", root / "swb_ms98_transcriptions"
    e_audio, e_trans = root / "LDC2002S09", root / "LDC2002T43"

    def by_speaker(splits):
        spk = defaultdict(list)
        for split in splits:
            for c in sorted(load_cuts(corpus_dir, split), key=lambda c: c.id):
                spk[c.supervisions[0].speaker].append(c)
        return [spk[s] for s in sorted(spk)]

    speakers = by_speaker(("dev", "train"))  # dev's voices first: the first conversation becomes dev
    for n in range(len(speakers) // 2):
        samples, turns = _conversation(speakers[2 * n], speakers[2 * n + 1], rng)
        conv = 2001 + n
        _write_sph(audio_dir / "swb1_d1" / "data" / f"sw0{conv}.sph", samples, 8000)
        d = trans_dir / str(conv)[:2] / str(conv)
        d.mkdir(parents=True, exist_ok=True)
        for side in "AB":
            lines = _ms98_lines(f"sw{conv}{side}", turns[side], len(samples) / 8000)
            (d / f"sw{conv}{side}-ms98-a-trans.text").write_text("\n".join(lines) + "\n")
    test = by_speaker(("test",))
    samples, turns = _conversation(test[0], test[1], rng)
    _write_sph(e_audio / "hub5e_00" / "english" / "en_4156.sph", samples, 8000)
    ref = [f"{s:.2f} {e:.2f} {side}: {' '.join(w)}" for side in "AB" for s, e, w in turns[side]]
    ref_dir = e_trans / "reference" / "english"
    ref_dir.mkdir(parents=True)
    (ref_dir / "en_4156.txt").write_text("#Language: eng\n#File id: 4156\n\n" + "\n\n".join(sorted(
        ref, key=lambda r: float(r.split()[0]))) + "\n")
    return audio_dir, trans_dir, e_audio, e_trans


@pytest.mark.slow
def test_swb300_recipe_on_an_ldc_layout_corpus(tiny_corpus, tmp_path):
    audio, trans, e_audio, e_trans = make_ldc_swbd(tiny_corpus.corpus_dir, tmp_path / "ldc")
    d = _run_recipe("swb300", tmp_path, [
        "--swbd-audio", str(audio), "--swbd-transcripts", str(trans), "--eval2000-audio", str(e_audio),
        "--eval2000-transcripts", str(e_trans), "--swbd-dev-utterances", "1", *SMALL,
        "--", "trainer.max_epochs=2"])
    from lhotse import CutSet

    cuts = {s: CutSet.from_file(d / "data" / "corpus" / "manifests" / f"cuts_{s}.jsonl.gz")
            for s in ("train", "dev", "test")}
    # both channels, segments inside their recordings, markup gone, too-short segments dropped
    assert {c.channel for c in cuts["train"]} == {0, 1} and min(c.start for c in cuts["train"]) > 0.3
    assert all("[" not in c.supervisions[0].text for s in cuts for c in cuts[s])
    assert min(c.duration for s in cuts for c in cuts[s]) > 0.5
    assert {c.recording_id for c in cuts["dev"]}.isdisjoint(c.recording_id for c in cuts["train"])
    _check_results(d, ("mono", "tri1", "tri2", "tri3"), "tri3")
