"""Shared fixtures: a tiny synthetic corpus with features and a lang dir.

``tiny_corpus`` is built once per test session (about 15 s on 2 cores): the
``tiny`` synthetic BN corpus (a few minutes of espeak-ng/flite speech), fbank
and MFCC feature cuts for train/dev/test, and a lang dir over a closed
vocabulary (every word of the tiny transcripts, so graphs stay small).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class TinyCorpus:
    root: Path
    corpus_dir: Path
    splits: tuple[str, ...] = ("train", "dev", "test")

    def fbank_cuts(self, split: str) -> Path:
        return self._features("fbank") / f"cuts_{split}.jsonl.gz"

    def mfcc_cuts(self, split: str) -> Path:
        return self._features("mfcc") / f"cuts_{split}.jsonl.gz"

    def transcripts(self, split: str) -> list[str]:
        from asr_hf.data.cuts import load_cuts

        return [c.supervisions[0].text for c in load_cuts(self.corpus_dir, split)]

    @functools.cached_property
    def lang_dir(self) -> Path:
        from asr_hf.lang.lang_dir import prepare_lang
        from asr_hf.lang.lexicon import Lexicon

        words = {w for s in self.splits for t in self.transcripts(s) for w in t.split()}
        out = self.root / "lang"
        prepare_lang(Lexicon.from_cmudict(words), out)
        return out

    def _features(self, kind: str) -> Path:
        from asr_hf.data.cuts import load_cuts
        from asr_hf.features.extract import compute_features

        out = self.root / kind
        for split in self.splits:
            if not (out / f"cuts_{split}.jsonl.gz").is_file():
                compute_features(load_cuts(self.corpus_dir, split), kind, out, split, jobs=2, progress=False)
        return out


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> TinyCorpus:
    from asr_hf.data.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("tiny_corpus")
    corpus = synthesize_corpus(root / "corpus", style="bn", size="tiny", seed=0, jobs=min(2, os.cpu_count() or 1),
                               progress=False)
    return TinyCorpus(root=root, corpus_dir=corpus)
