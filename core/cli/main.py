"""Entry point of the ``atomsmith`` command; bad input gives a one-line error and exit code 2."""

from __future__ import annotations

import argparse
import sys

from .. import __version__


class CommandLineError(ValueError):
    """Bad command-line input; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"atomsmith: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all sub-commands."""
    from . import atoms, demo, simulate

    p = _Parser(prog="atomsmith", description="Machine learning and a digital twin for atomic-resolution STEM.")
    p.add_argument("--version", action="version", version=f"atomsmith {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo.add_parser(sub)
    atoms.add_parser(sub)
    simulate.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandLineError, ValueError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"atomsmith: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atomsmith: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
