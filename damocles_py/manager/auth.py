"""The farm token: the secret every mutating call to a standalone manager carries
(`authorization: Bearer <token>`, see `server.TokenAuth`).

`damocles-manager run` creates it on first start in `<state-dir>/manager.token` (random, mode
0600, written atomically and fsynced: a crash never leaves an empty file); workers read it from
`[sector_manager.rpc_client] token_file`, operators' commands from `--token-file`. A token file
that is empty, short, or readable by others is refused at start: an empty token would accept
`Bearer ` with nothing after it, and a short one could be guessed.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from damocles_py.errors import UserError
from damocles_py.store.durable import write_durably

TOKEN_FILE = "manager.token"
MIN_TOKEN_CHARS = 32  # a new token is 64 hex characters (32 random bytes)


def token_problem(path: Path) -> str | None:
    """Why the token file at `path` cannot be used, or None (also None when it does not exist yet)."""
    try:
        st = path.stat()
        token = path.read_text().strip() if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot read the manager token file {path} ({e}). Fix: check its owner and permissions"
    if token is None:
        return f"the manager token file {path} is not a regular file. Fix: point the token file setting at a file"
    if len(token) < MIN_TOKEN_CHARS:
        what = "is empty" if not token else f"holds only {len(token)} characters (at least {MIN_TOKEN_CHARS} needed)"
        return (f"the manager token file {path} {what}: it cannot be used as a credential. Fix: delete it "
                f"(rm {path}) and start the manager again, which writes a new random token; then give it "
                f"to the workers")
    if not token.isascii() or not token.isprintable() or " " in token:
        return (f"the manager token file {path} holds characters a token cannot carry (spaces, control or "
                f"non-ASCII characters). Fix: delete it and start the manager again")
    if st.st_mode & 0o077:
        return (f"the manager token file {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}). "
                f"Fix: chmod 600 {path}")
    return None


def read_token(path: Path) -> str:
    """The token in `path`; UserError naming the fix if there is none or it is unusable."""
    problem = token_problem(path)
    if problem:
        raise UserError(problem)
    if not path.exists():
        raise UserError(f"the manager token file {path} does not exist. Fix: copy it from the manager's "
                        f"state dir ({TOKEN_FILE}, written at its first start)")
    return path.read_text().strip()


def ensure_token(path: Path) -> str:
    """The token in `path`, created (random, mode 0600, durably) if there is none yet."""
    if not path.exists() and token_problem(path) is None:
        write_durably(path, secrets.token_hex(32).encode(), mode=0o600)
    return read_token(path)
