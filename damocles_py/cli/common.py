"""What every command shares: errors become one clear line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys


def _user_errors() -> tuple[type[BaseException], ...]:
    from damocles_py.errors import UserError
    from damocles_py.proofs.errors import InvalidInput, ParametersMissing, ProofsError

    return (UserError, InvalidInput, ParametersMissing, ProofsError, OSError)


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
