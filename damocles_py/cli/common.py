"""What every command shares: errors become one clear line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys


def _user_errors() -> tuple[type[BaseException], ...]:
    from damocles_py.errors import UserError
    from damocles_py.proofs.errors import InvalidInput, ParametersMissing, ProofsError

    return (UserError, InvalidInput, ParametersMissing, ProofsError, OSError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (naming the fix), like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}. Fix: see `{self.prog} --help`\n")


def non_negative_int(text: str) -> int:
    """An argparse type for indexes and counts: a whole number >= 0, at most 2**31-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {2**31 - 1}, got {text}")
    return value


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", None) or logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
