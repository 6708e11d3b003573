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
    p.set_defaults(func=_synth)

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
    from asr_hf.data.synth import synthesize_corpus

    out = synthesize_corpus(args.out, style=args.style, size=args.size, seed=args.seed, jobs=args.jobs)
    print(json.dumps(json.loads((out / "corpus_stats.json").read_text())))
    return 0


def _sizes(args: argparse.Namespace) -> int:
    from asr_hf.data.synth import describe_sizes

    for line in describe_sizes():
        print(line)
    return 0
