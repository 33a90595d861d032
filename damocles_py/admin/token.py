"""The admin token: the secret every state-changing admin call carries (`authorization: Bearer <token>`).

The daemon creates it once in `[worker] state_dir` (random, owner-readable, written atomically and
fsynced, so a crash never leaves an empty file). A token file that is empty or short is refused
at start and by the CLI: it would make a guessable credential, and an empty one would accept
`Bearer ` with nothing after it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from damocles_py.errors import UserError
from damocles_py.store.durable import write_durably

TOKEN_FILE = "admin.token"
MIN_TOKEN_CHARS = 32  # the daemon writes 64 hex characters (32 random bytes)


def token_problem(path: Path) -> str | None:
    """Why the token file at `path` cannot be used, or None (also None when it does not exist yet)."""
    if not path.exists():
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot read the admin token file {path} ({e}). Fix: check its owner and permissions"
    if len(token) < MIN_TOKEN_CHARS:
        what = "is empty" if not token else f"holds only {len(token)} characters (at least {MIN_TOKEN_CHARS} needed)"
        return (f"the admin token file {path} {what}: it cannot be used as a credential. Fix: delete it "
                f"(rm {path}) and start the daemon again, which writes a new random token")
    if not token.isascii() or not token.isprintable() or " " in token:
        return (f"the admin token file {path} holds characters a token cannot carry (spaces, control or "
                f"non-ASCII characters). Fix: delete it (rm {path}) and start the daemon again")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return f"the admin token file {path} is readable by other users (mode {mode:o}). Fix: chmod 600 {path}"
    return None


def read_token(path: Path) -> str | None:
    """The token in `path`, None if there is no file; UserError if the file is unusable."""
    problem = token_problem(path)
    if problem:
        raise UserError(problem)
    return path.read_text().strip() if path.exists() else None


def ensure_token(path: Path) -> str:
    """The token in `path`, created (random, mode 0600, durably) if there is none yet."""
    if not path.exists():
        write_durably(path, secrets.token_hex(32).encode(), mode=0o600)
    token = read_token(path)
    assert token is not None
    return token
