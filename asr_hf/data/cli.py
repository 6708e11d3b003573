"""``asr-hf synth`` and friends: corpus generation commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from asr_hf.data.synth import SIZES, STYLE_RATE

    p = sub.add_parser("synth", help="synthesize a BN/SWB-style multi-speaker corpus")
    p.add_argument("--out", required=True, type=Path, help="corpus directory")
    p.add_argument("--style", choices=sorted(STYLE_RATE), default="bn")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the planned corpus statistics (and dev perplexity of its LM) without synthesizing")
    p.set_defaults(func=_synth)

    p = sub.add_parser("make-cuts", help="per-utterance cuts + LM text from prepared (LDC) manifests")
    p.add_argument("--manifests", required=True, type=Path, help="dir with recordings_/supervisions_<split>")
    p.add_argument("--out", required=True, type=Path, help="corpus dir to write")
    p.set_defaults(func=_make_cuts)

    p = sub.add_parser("corpus-text", help="write the transcripts of one split, one per line")
    p.add_argument("--corpus", required=True, type=Path, help="corpus dir with manifests/")
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, type=Path)
    from asr_hf.data.paths import corpus_cuts_file
    from asr_hf.utils.io import redo_option

    redo_option(p, lambda a: ([a.out], [corpus_cuts_file(a.corpus, a.split)]))
    p.set_defaults(func=_text)

    p = sub.add_parser("corpus-sizes", help="list the named synthetic corpus sizes")
    p.set_defaults(func=_sizes)

    import importlib

    try:  # LDC preparation and Kaldi data-dir commands
        cli_ldc = importlib.import_module("asr_hf.data.cli_ldc")
    except ModuleNotFoundError as exc:
        if exc.name != "asr_hf.data.cli_ldc":
            raise
    else:
        cli_ldc.register(sub)


def _synth(args: argparse.Namespace) -> int:
    from asr_hf.data.synth import plan_corpus, synthesize_corpus

    if args.dry_run:
        import tempfile

        from asr_hf.lang.lm import ArpaLM, train_lm

        stats = plan_corpus(args.style, args.size, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            arpa = train_lm(stats.pop("lm_sentences"), Path(tmp) / "lm.arpa", order=3)
            rep = ArpaLM.read(arpa).perplexity(stats.pop("dev_sentences"))
        stats["dev"]["perplexity_3gram"] = round(rep.ppl, 1)
        print(json.dumps(stats))
        return 0

    out = synthesize_corpus(args.out, style=args.style, size=args.size, seed=args.seed, jobs=args.jobs)
    print(json.dumps(json.loads((out / "corpus_stats.json").read_text())))
    return 0


def _make_cuts(args: argparse.Namespace) -> int:
    from asr_hf.data.cuts import cuts_from_manifests

    cuts_from_manifests(args.manifests, args.out)
    return 0


def _text(args: argparse.Namespace) -> int:
    from asr_hf.data.cuts import load_cuts
    from asr_hf.utils.io import atomic_output

    lines = [s.text for c in load_cuts(args.corpus, args.split) for s in c.supervisions if s.text]
    with atomic_output(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


def _sizes(args: argparse.Namespace) -> int:
    from asr_hf.data.synth import describe_sizes

    for line in describe_sizes():
        print(line)
    return 0
