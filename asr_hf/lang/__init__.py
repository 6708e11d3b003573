"""asr_hf.lang: lexicon, Kaldi lang directory (phones/words, topo, L.fst), n-gram LM and G.fst.

Exports are resolved lazily so that ``import asr_hf.lang.lexicon`` does not load
the Kaldi bindings (which must be imported in a fixed order, see
:mod:`asr_hf.utils.kaldi`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # lexicon
    "CMU_PHONES": "lexicon",
    "OOV_WORD": "lexicon",
    "SIL": "lexicon",
    "SPN": "lexicon",
    "SILENCE_PHONES": "lexicon",
    "RESERVED_WORDS": "lexicon",
    "Lexicon": "lexicon",
    "MissingPronunciation": "lexicon",
    "collect_words": "lexicon",
    "lexicon_for_words": "lexicon",
    "load_cmudict": "lexicon",
    # lang dir
    "LangDir": "lang_dir",
    "SymbolTable": "lang_dir",
    "prepare_lang": "lang_dir",
    "add_lex_disambig": "lang_dir",
    "make_topo": "lang_dir",
    "fst_arcs": "lang_dir",
    # LM
    "ArpaLM": "lm",
    "OovPolicy": "lm",
    "PerplexityReport": "lm",
    "Smoothing": "lm",
    "make_G": "lm",
    "read_sentences": "lm",
    "train_lm": "lm",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from asr_hf.lang.lang_dir import LangDir, SymbolTable, add_lex_disambig, fst_arcs, make_topo, prepare_lang
    from asr_hf.lang.lexicon import (
        CMU_PHONES,
        OOV_WORD,
        RESERVED_WORDS,
        SIL,
        SILENCE_PHONES,
        SPN,
        Lexicon,
        MissingPronunciation,
        collect_words,
        lexicon_for_words,
        load_cmudict,
    )
    from asr_hf.lang.lm import ArpaLM, OovPolicy, PerplexityReport, Smoothing, make_G, read_sentences, train_lm


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
