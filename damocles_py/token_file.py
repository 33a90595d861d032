"""Token files: the secrets state-changing calls carry as `authorization: Bearer <token>`.

Two live beside each other with the same rules: the worker's admin token (`admin/token.py`) and
the manager's farm token (`manager/auth.py`). A token is created once (random, mode 0600, written
atomically and fsynced, so a crash never leaves an empty file). A token file that is empty, short,
not a regular file, holds characters a header cannot carry, or is readable by others is refused
with one line and its fix: an empty token would accept `Bearer ` with nothing after it, a short
one could be guessed.
"""

from __future__ import annotations

import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from damocles_py.errors import UserError
from damocles_py.store.durable import write_durably

MIN_TOKEN_CHARS = 32  # a new token is 64 hex characters (32 random bytes)


@dataclass(frozen=True)
class TokenKind:
    """Which token a file holds, for the messages: `name` ("admin"), who writes it, and how to
    recreate it (`restart`: "start the daemon again")."""

    name: str
    restart: str
    missing_fix: str  # what to do when a required token file does not exist
    then: str = ""  # said after a new token is written (e.g. who must get it)

    def problem(self, path: Path) -> str | None:
        """Why the token file at `path` cannot be used, or None (also None when it does not exist yet)."""
        what = f"the {self.name} token file {path}"
        try:
            st = path.stat()
            token = path.read_text().strip() if stat.S_ISREG(st.st_mode) else None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            return f"cannot read {what} ({e}). Fix: check its owner and permissions"
        if token is None:
            return f"{what} is not a regular file. Fix: point the token file setting at a file"
        if len(token) < MIN_TOKEN_CHARS:
            size = "is empty" if not token else f"holds only {len(token)} characters (at least {MIN_TOKEN_CHARS} needed)"
            return (f"{what} {size}: it cannot be used as a credential. Fix: delete it (rm {path}) and "
                    f"{self.restart}, which writes a new random token{self.then}")
        if not token.isascii() or not token.isprintable() or " " in token:
            return (f"{what} holds characters a token cannot carry (spaces, control or non-ASCII "
                    f"characters). Fix: delete it (rm {path}) and {self.restart}")
        if st.st_mode & 0o077:
            return f"{what} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}). Fix: chmod 600 {path}"
        return None

    def read(self, path: Path, required: bool) -> str | None:
        """The token in `path`; None if there is no file and it is not `required`; UserError naming
        the fix if the file is unusable (or missing but required)."""
        problem = self.problem(path)
        if problem:
            raise UserError(problem)
        if not path.exists():
            if required:
                raise UserError(f"the {self.name} token file {path} does not exist. Fix: {self.missing_fix}")
            return None
        return path.read_text().strip()

    def ensure(self, path: Path) -> str:
        """The token in `path`, created (random, mode 0600, durably) if there is none yet."""
        if not path.exists() and self.problem(path) is None:
            write_durably(path, secrets.token_hex(32).encode(), mode=0o600)
        token = self.read(path, required=True)
        assert token is not None
        return token
