"""The admin token: the secret every state-changing admin call carries (`authorization: Bearer <token>`).

The daemon creates it once in `[worker] state_dir`; the rules are those of every token file
(`damocles_py/token_file.py`).
"""

from __future__ import annotations

from pathlib import Path

from damocles_py.token_file import MIN_TOKEN_CHARS, TokenKind

__all__ = ["TOKEN_FILE", "MIN_TOKEN_CHARS", "token_problem", "read_token", "ensure_token"]

TOKEN_FILE = "admin.token"
ADMIN = TokenKind("admin", "start the daemon again", "start the daemon once, which writes it")


def token_problem(path: Path) -> str | None:
    return ADMIN.problem(path)


def read_token(path: Path) -> str | None:
    """The token in `path`, None if there is no file; UserError if the file is unusable."""
    return ADMIN.read(path, required=False)


def ensure_token(path: Path) -> str:
    return ADMIN.ensure(path)
