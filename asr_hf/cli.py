"""The ``asr-hf`` command line: one entry point, one subcommand per pipeline step.

Each command module exposes ``register(subparsers)`` which adds its subcommands
and sets ``func`` on them.  The commands are thin wrappers over library
functions; a :class:`~asr_hf.utils.errors.DataError` is printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import is_current, mark_output

# argparse entries that are not part of a command's request (see utils.io.redo_option)
NOT_REQUEST = ("func", "products", "request_ignore", "force", "verbose")

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
        result = _run(args)
    except DataError as exc:
        print(f"asr-hf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ImportError, OSError, BrokenProcessPool) as exc:
        # A library that does not load (in this process or in a worker, whose exception
        # the pool re-raises here): one line naming the package, not a pool traceback.
        if args.verbose:
            raise
        print(f"asr-hf {args.command}: error: {library_failure(exc)} (-v for the traceback)", file=sys.stderr)
        return 3
    return int(result or 0)


def _run(args: argparse.Namespace) -> int:
    """Run the command, or skip it when it declares its products and they are current
    (made by the same request and newer than every input)."""
    products = getattr(args, "products", None)
    if products is None:
        return args.func(args)
    outputs, inputs = products(args)
    skip = NOT_REQUEST + args.request_ignore
    request = {"command": args.command, **{k: v for k, v in vars(args).items() if k not in skip}}
    if not args.force and is_current(outputs, request, inputs):
        print(f"asr-hf {args.command}: {outputs[0]} is current (same request, newer than its inputs); "
              "skipped (--force redoes it)", file=sys.stderr)
        return 0
    result = args.func(args)
    if not result:
        mark_output(outputs[0], request)
    return result


def library_failure(exc: BaseException) -> str:
    """One line for an import / shared-library / worker failure, naming the installed
    package (and version) whose file appears in the message when there is one."""
    text = " ".join(str(exc).split())
    if isinstance(exc, BrokenProcessPool):
        return f"a worker process died abruptly ({text or 'killed'}); out of memory, or a crash in a compiled library"
    package = None
    m = re.search(r"site-packages/([A-Za-z0-9_]+)", text)
    if m:
        package = m.group(1)
    elif isinstance(exc, ImportError) and exc.name:
        package = exc.name.split(".")[0]
    if package:
        from importlib import metadata

        dists = metadata.packages_distributions().get(package, [])
        for dist in dists:
            try:
                return f"package {dist} {metadata.version(dist)} failed: {type(exc).__name__}: {text}"
            except metadata.PackageNotFoundError:
                pass
        return f"package {package} failed: {type(exc).__name__}: {text}"
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
