"""The ``asr-hf`` command line: one entry point, one subcommand per pipeline step.

Each command module exposes ``register(subparsers)`` which adds its subcommands
and sets ``func`` on them.  The commands are thin wrappers over library
functions; a :class:`~asr_hf.utils.errors.DataError` is printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from asr_hf.utils.errors import DataError

# Modules that contribute subcommands.  A module missing here (not yet written)
# is skipped so the CLI keeps working while the toolkit grows.
COMMAND_MODULES = (
    "asr_hf.data.cli",
    "asr_hf.features.cli",
    "asr_hf.lang.cli",
    "asr_hf.gmm.cli",
    "asr_hf.decode.cli",
    "asr_hf.nnet.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr-hf", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        result = args.func(args)
    except DataError as exc:
        print(f"asr-hf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
