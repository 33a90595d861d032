"""The farm token: the secret every mutating call to a standalone manager carries
(`authorization: Bearer <token>`, see `server.TokenAuth`).

`damocles-manager run` creates it on first start in `<state-dir>/manager.token`; workers read it
from `[sector_manager.rpc_client] token_file`, operators' commands from `--token-file`. The rules
are those of every token file (`damocles_py/token_file.py`).
"""

from __future__ import annotations

from pathlib import Path

from damocles_py.token_file import MIN_TOKEN_CHARS, TokenKind

__all__ = ["TOKEN_FILE", "MIN_TOKEN_CHARS", "token_problem", "read_token", "ensure_token"]

TOKEN_FILE = "manager.token"
FARM = TokenKind("manager", "start the manager again",
                 f"copy it from the manager's state dir ({TOKEN_FILE}, written at its first start)",
                 then="; then give it to the workers")


def token_problem(path: Path) -> str | None:
    return FARM.problem(path)


def read_token(path: Path) -> str:
    """The token in `path`; UserError naming the fix if there is none or it is unusable."""
    token = FARM.read(path, required=True)
    assert token is not None
    return token


def ensure_token(path: Path) -> str:
    return FARM.ensure(path)
