"""Entry point of the ``megfm`` command.

Each subcommand lives in ``megfm/cli/_<name>.py`` and defines ``add_parser(subparsers)``,
which registers its options and sets ``func`` (called with the parsed namespace, returns
an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from .._version import __version__

# order shown in `megfm --help`
COMMANDS = ("simulate", "prepare", "export", "pretrain", "embed", "evaluate", "explain", "demo")


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand that is installed."""
    parser = argparse.ArgumentParser(
        prog="megfm",
        description="Self-supervised foundation models of MEG: simulate, prepare, pretrain, "
        "embed, evaluate, explain.",
    )
    parser.add_argument("--version", action="version", version=f"megfm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"megfm.cli._{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``megfm`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Lightning logs device summaries and tips at INFO through its own handler; keep them
    # for -v and above.
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, TypeError, FloatingPointError) as exc:
        # Known failures (bad input, damaged files, busy store, bad windows): one line, no
        # traceback (use -vv to see it).
        if args.verbose >= 2:
            raise
        print(f"megfm {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line.

    An exception re-raised from a DataLoader worker carries the worker's traceback in its
    message; only the original message (its last line) is kept.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, sep, message = last.partition(": ")
        text = message if sep and name.replace(".", "").isidentifier() else last
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
