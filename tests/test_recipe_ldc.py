"""The LDC Broadcast News recipe (``recipes/bn50/run.sh``) on a miniature corpus in the
LDC98S71 / LDC98T28 / LDC2002S11 layout, stages 0-10.

The episodes are made from the tiny synthetic corpus: its utterances are concatenated into
NIST SPHERE recordings with silence between turns, so that every segment starts in the
middle of its recording (an alignment stored from 0 would be sliced at the segment's
offset), and described by Hub4 SGML (turns, ``<time>`` segments, ``{breath}`` / ``[noise]``
markup, an ``<overlap>``) or, for the eval97-style test set, an STM.  Real speech is needed
because the GMMs and the DNN must train on it.
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


def _recording(group, rng):
    """Concatenate the group's audio with silence; returns ``(samples, [(start, end, cut), ...])``."""
    parts, turns, t = [np.zeros(int(GAP * RATE), np.float32)], [], GAP
    for c in group:
        audio = c.load_audio()[0].astype(np.float32)
        turns.append((t, t + len(audio) / RATE, c))
        parts += [audio, (rng.standard_normal(int(GAP * RATE)) * 1e-3).astype(np.float32)]
        t += len(audio) / RATE + GAP
    return np.concatenate(parts), turns


def _write_sph(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(samples * 32767, -32768, 32767).astype(np.int16), RATE, format="NIST", subtype="PCM_16")


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
    recipe = tmp_path / "recipe"
    (recipe / "bn50").mkdir(parents=True)
    for f in ("run.sh", "conf.sh"):  # a copy, so that data/ and exp/ stay in tmp_path
        (recipe / "bn50" / f).write_text((REPO / "recipes" / "bn50" / f).read_text())
    (recipe / "common").symlink_to(REPO / "recipes" / "common")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    args = ["--bn-audio", str(audio), "--bn-transcripts", str(trans), "--eval97", str(eval97),
            "--bn-dev-fraction", "0.2", "--jobs", "2", "--gmm-systems", "mono tri1", "--mono-totgauss", "150",
            "--tri-leaves", "80", "--tri-totgauss", "300", "--optimizers", "sgd", "--model", "dnn_tiny",
            "--trainer", "cpu_demo", "--acwt-sweep-gmm", "0.08,0.12", "--acwt-sweep-dnn", "0.08,0.12",
            "--decode-opts", "--beam 10 --lattice-beam 6 --max-active 1000", "--", "trainer.max_epochs=2"]
    res = subprocess.run(["bash", str(recipe / "bn50" / "run.sh"), *args], env=env, capture_output=True, text=True,
                         timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    d = recipe / "bn50"
    # stage 0: segments start inside their recordings, and the markup is gone from the text
    from lhotse import CutSet

    train = CutSet.from_file(d / "data" / "corpus" / "manifests" / "cuts_train.jsonl.gz")
    assert min(c.start for c in train) >= GAP - 0.01 and all("{" not in c.supervisions[0].text for c in train)
    # stage 8 trained on tri1's alignments of those segments (the offset bug made every one fail)
    summary = json.loads((d / "exp" / "dnn_sgd" / "train_summary.json").read_text())
    assert summary["optimizer"] == "sgd"
    assert "exp/tri1/ali" in (d / "exp" / "dnn_sgd" / "command.txt").read_text()
    for system in ("mono", "tri1", "dnn_sgd"):
        for s in ("dev", "test"):
            wer = json.loads((d / "exp" / system / f"decode_{s}" / "wer.json").read_text())
            assert wer["ref_words"] > 0 and 0 <= wer["wer_percent"] <= 150, (system, s, wer)
    assert "dnn_sgd" in (d / "RESULTS.md").read_text()
