"""Worker configuration: typed schema (schema.py) and the validating TOML loader (load.py)."""

from damocles_py.config.schema import *  # noqa: F401,F403
