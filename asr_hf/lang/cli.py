"""``asr-hf prepare-lang | validate-lang | train-lm | make-g``: thin wrappers over :mod:`asr_hf.lang`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from asr_hf.lang.lang_dir import LangDir, prepare_lang
from asr_hf.lang.lexicon import Lexicon, MissingPronunciation, collect_words, lexicon_for_words
from asr_hf.lang.lm import ArpaLM, OovPolicy, Smoothing, make_G, train_lm
from asr_hf.utils.io import atomic_output, redo_option

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the lang/LM subcommands to the ``asr-hf`` parser."""
    p = subparsers.add_parser(
        "prepare-lang",
        help="write a Kaldi lang dir (phones/words tables, topo, L.fst) from words + CMU dict or a lexicon.txt",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, nargs="+", help="word list(s) or training text(s): every token is a word")
    src.add_argument("--lexicon", type=Path, help="an existing lexicon.txt (word phone ...)")
    p.add_argument("--dict", type=Path, help="pronunciation dictionary for --text (a lexicon.txt); default: CMU")
    p.add_argument("--max-prons", type=int, default=3, help="pronunciations kept per word (with --text)")
    p.add_argument(
        "--missing",
        choices=[m.value for m in MissingPronunciation],
        default=MissingPronunciation.UNK.value,
        help="words without a CMU pronunciation: leave them out (they map to <unk>) or fail",
    )
    p.add_argument("--sil-prob", type=float, default=0.5, help="optional-silence probability in L.fst")
    p.add_argument("--position-dependent", action="store_true", help="word-position-dependent phones")
    p.add_argument("out_dir", type=Path, help="lang directory to write")
    redo_option(p, lambda a: ([a.out_dir], [*(a.text or []), *(p for p in (a.lexicon, a.dict) if p)]))
    p.set_defaults(func=_prepare_lang)

    p = subparsers.add_parser("validate-lang", help="check a lang dir (Kaldi validate_lang.pl essentials)")
    p.add_argument("lang_dir", type=Path)
    p.add_argument("--skip-fsts", action="store_true", help="do not scan L/L_disambig/G arcs")
    p.set_defaults(func=_validate_lang)

    p = subparsers.add_parser("train-lm", help="train a Kneser-Ney ARPA LM; report dev perplexity/OOV rate as JSON")
    p.add_argument("--text", type=Path, required=True, help="training text, one normalised sentence per line")
    p.add_argument("--out", type=Path, required=True, help="ARPA file to write")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--smoothing", choices=[s.value for s in Smoothing], default=Smoothing.MODIFIED_KN.value)
    p.add_argument("--prune-threshold", type=float, default=0.0, help="entropy-pruning threshold (0: none)")
    p.add_argument("--lang", type=Path, help="map training words outside this lang dir's words.txt to its OOV word")
    p.add_argument("--dev", type=Path, help="dev text for perplexity / OOV rate")
    p.add_argument("--report", type=Path, help="also write the dev report JSON here")
    redo_option(p, lambda a: ([a.out, *([a.report] if a.report else [])],
                              [a.text, *([a.lang / "words.txt"] if a.lang else []), *([a.dev] if a.dev else [])]))
    p.set_defaults(func=_train_lm)

    p = subparsers.add_parser("make-g", help="compile an ARPA LM into G.fst over a lang dir's words.txt")
    p.add_argument("--arpa", type=Path, required=True)
    p.add_argument("--lang", type=Path, required=True)
    p.add_argument("--out", type=Path, help="default: <lang>/G.fst")
    p.add_argument("--oov", choices=[o.value for o in OovPolicy], default=OovPolicy.DROP.value,
                   help="ARPA words not in words.txt: drop their n-grams or fail")
    redo_option(p, lambda a: ([a.out or a.lang / "G.fst"], [a.arpa, a.lang / "words.txt"]))
    p.set_defaults(func=_make_g)


def _prepare_lang(args: argparse.Namespace) -> int:
    if args.lexicon is not None:
        lexicon = Lexicon.read(args.lexicon)
        source = str(args.lexicon)
    else:
        words: dict[str, str] = {}
        for path in args.text:
            for w, where in collect_words(path).items():
                words.setdefault(w, where)
        dictionary = Lexicon.read(args.dict).prons if args.dict is not None else None
        lexicon, _ = lexicon_for_words(words, max_prons=args.max_prons, missing=args.missing, dictionary=dictionary)
        source = str(args.dict) if args.dict is not None else "CMU dictionary"
    lang = prepare_lang(
        lexicon, args.out_dir, sil_prob=args.sil_prob, position_dependent=args.position_dependent, source=source
    )
    print(json.dumps({"lang_dir": str(lang.path), "words": len(lang.vocabulary), "phones": len(lang.hmm_phones),
                      "disambig": len(lang.disambig_phones)}))
    return 0


def _validate_lang(args: argparse.Namespace) -> int:
    LangDir.load(args.lang_dir, validate=True, check_fsts=not args.skip_fsts)
    print(json.dumps({"lang_dir": str(args.lang_dir), "valid": True}))
    return 0


def _train_lm(args: argparse.Namespace) -> int:
    vocabulary = oov = None
    if args.lang is not None:
        lang = LangDir.load(args.lang)
        vocabulary, oov = lang.vocabulary, lang.oov
    kwargs = {"unk": oov} if oov is not None else {}
    train_lm(args.text, args.out, order=args.order, smoothing=args.smoothing, vocabulary=vocabulary,
             prune_threshold=args.prune_threshold, **kwargs)
    result: dict = {"arpa": str(args.out)}
    if args.dev is not None:
        report = ArpaLM.read(args.out).perplexity(args.dev)
        result.update(dev=str(args.dev), **report.to_dict())
    text = json.dumps(result)
    if args.report is not None:
        with atomic_output(args.report) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _make_g(args: argparse.Namespace) -> int:
    out = make_G(args.arpa, args.lang, args.out, oov=args.oov)
    print(json.dumps({"G": str(out)}))
    return 0
