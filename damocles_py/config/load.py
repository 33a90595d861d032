"""The validating loader for `sealing.toml`: TOML in, a typed `Config` (schema.py) out.

Each section has a small spec table, key -> parser. A key missing from its table is an error,
never silently skipped: a typo like `max_retires` would otherwise leave the default in force and
nobody would notice. Every error is a `ConfigError` naming the file, the dotted key, what is wrong
and how to fix it, so the CLI can print it as one line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import glob
import json
import math
import ipaddress
import os
import re
import shutil
import socket
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Collection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from damocles_py.config.schema import (
    AdminServerConfig,
    AttachedStoreConfig,
    Config,
    EmbeddedManagerConfig,
    MetricsConfig,
    PROCESSOR_STAGES,
    Plan,
    ProcessorConfig,
    ProcessorsConfig,
    RpcServerConfig,
    SealingConfig,
    SealingThreadConfig,
    SectorManagerConfig,
    WorkerConfig,
)
from damocles_py.errors import UserError
from damocles_py.proofs.errors import InvalidInput
from damocles_py.proofs.types import SectorSize

__all__ = ["STAGE_NAMES", "ConfigError", "format_cpu_list", "load_config", "load_hot_thread_config",
           "load_worker_section", "machine_cpus", "parse_bytes", "parse_config", "parse_cpu_list", "parse_duration"]

# The stages `[processors.limitation.concurrent]` may limit (damocles' names; `transfer` limits
# our persist copies, where damocles applies it to unseal uploads only).
STAGE_NAMES = ("add_pieces", "tree_d", "pc1", "pc2", "c1", "c2", "snap_encode", "snap_prove", "transfer")
# damocles stages this worker does not run yet: a limit on them would limit nothing.
STAGES_NOT_YET = ("synth_proof", "unseal", "window_post")
# `[[processors.<stage>]]` sections damocles has for stages no plan here runs.
PROCESSORS_NOT_YET = ("unseal", "window_post", "sealing_daemons")
# damocles ignores a `limitation.staggered` interval below 1 s (with a warning); we refuse it.
MIN_STAGGER = 1.0

HOT_CONFIG = "config.toml"  # damocles' per-thread hot config, `<location>/config.toml`
_MINIMAL_THREAD = '`[[sealing_thread]]` followed by the line `location = "./store/t0"`'


class ConfigError(UserError):
    """A problem in the config file. str() is one line: `<file>: <key>: <problem>. Fix: <fix>`.

    `path` is None while a value is parsed on its own (parse_duration, parse_bytes);
    parse_config fills it in. `key` is None for whole-file problems (missing, unreadable).
    """

    def __init__(self, path: Path | None, key: str | None, problem: str, fix: str):
        super().__init__(path, key, problem, fix)  # keeps the error picklable
        self.path = path
        self.key = key
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        where = [str(part) for part in (self.path, self.key) if part]
        return ": ".join([*where, f"{self.problem.rstrip('.')}. Fix: {self.fix}"])


def _invalid(key: str | None, problem: str, fix: str) -> ConfigError:
    return ConfigError(None, key, problem, fix)


# ---------------------------------------------------------------------------------------------
# Entry points


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a `sealing.toml`. Raises ConfigError for anything wrong with it."""
    path = Path(os.path.abspath(os.path.expanduser(path)))
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, None, "config file not found",
            f"check the path, or create the file; the smallest valid one is {_MINIMAL_THREAD}",
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, f"not UTF-8 text ({e.reason})", "save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(
            path, None, f"cannot read the config file ({e.strerror})", "check the path and its permissions"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(path, e) from None
    return parse_config(data, path)


def load_worker_section(path: str | os.PathLike) -> WorkerConfig:
    """Only `[worker]` of a `sealing.toml`: what the admin commands need (the admin address and the
    state dir with the token), so `worker list` works while another section (or a thread's hot
    config) is broken."""
    path = Path(os.path.abspath(os.path.expanduser(path)))
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return load_config(path).worker  # the full load names the problem in one line
    try:
        return _Loader(path.parent).worker(data.get("worker", {}), "worker")
    except ConfigError as e:
        e.path = path
        raise


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Validate parsed TOML; relative paths are resolved against `path`'s directory."""
    path = Path(os.path.abspath(path))
    try:
        return _Loader(path.parent).config(data, path)
    except ConfigError as e:
        if e.path is not None:  # a problem in another file (a thread's hot config.toml)
            raise
        e.path = path
        if NOT_YET in e.problem:  # a damocles file: name every such key at once, not one per attempt
            others = _more_not_yet(data, path, e.key)
            if others:
                e.fix += f" (also not supported yet in this file: {', '.join(others)})"
        raise


NOT_YET = "not supported yet"


def _more_not_yet(data: dict[str, Any], path: Path, key: str | None) -> list[str]:
    """The other keys a load would refuse as not supported yet, found by dropping each in turn."""
    data, found = copy.deepcopy(data), []
    while key is not None and _drop(data, key) and len(found) < 20:
        try:
            _Loader(path.parent).config(data, path)
            break
        except ConfigError as e:
            if NOT_YET not in e.problem or e.path is not None:
                break
            key = e.key
            found.append(key)
    return found


def _drop(data: dict[str, Any], key: str) -> bool:
    """Delete a dotted key (`processors.pc1`, `sealing_thread[0].plan`) from parsed TOML."""
    *parents, leaf = re.split(r"\.(?![^\[]*\])", key)
    node: Any = data
    try:
        for part in parents:
            name, *index = re.split(r"\[(\d+)\]", part)[:2]
            node = node[name]
            if index:
                node = node[int(index[0])]
        del node[leaf]
        return True
    except (KeyError, IndexError, TypeError, ValueError):
        return False


def _syntax_error(path: Path, e: Exception) -> ConfigError:
    # tomllib puts the position at the end of its message: "... (at line 3, column 9)".
    message = str(e)
    m = re.search(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$", message)
    detail = message[: m.start()] if m else message
    if m and m.group(1):
        key, detail = f"line {m.group(1)}", f"{detail} at column {m.group(2)}"
    else:
        key = "end of file" if m else None
    return ConfigError(
        path, key, f"invalid TOML: {detail}",
        "correct the TOML syntax there (strings need double quotes, a table is [name], "
        "an array of tables [[name]], each key only once)",
    )


def load_hot_thread_config(base: SealingThreadConfig) -> SealingThreadConfig:
    """damocles' per-thread hot config: `<location>/config.toml` with `plan` and `[sealing]` keys,
    merged over the thread's config from sealing.toml (defaults <- [sealing] <- [[sealing_thread]].sealing
    <- this file). Read anew on each call; without the file, the sealing.toml config comes back (so
    deleting the file reverts). `base` may be that config or one this function returned.

    Raises ConfigError (one line, naming the hot file and its key) when the file is bad.
    """
    static = base.static or base
    path = static.location / HOT_CONFIG
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return static
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, f"not UTF-8 text ({e.reason})", "save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read this thread's hot config ({e.strerror})",
                          "check its permissions, or delete it to use the thread's config from sealing.toml") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(path, e) from None
    try:
        if "location" in data:
            raise _invalid("location", "a thread's location cannot change in its hot config",
                           "remove the line (the location is set in sealing.toml)")
        for name in data:
            if name not in _HOT_THREAD:
                close = difflib.get_close_matches(name.lower(), list(_HOT_THREAD), n=1)
                raise _invalid(name, "unknown key", f"did you mean `{close[0]}`?" if close else
                               "remove it; a hot config holds only `plan` and `[sealing]` keys")
        values = _fields(data, "", _HOT_THREAD)
    except ConfigError as e:
        e.path = path
        raise
    if not values:
        return static
    return dataclasses.replace(
        static,
        plan=values.get("plan", static.plan),
        sealing=dataclasses.replace(static.sealing, **values.get("sealing", {})),
        static=static,
    )


# ---------------------------------------------------------------------------------------------
# Scalar values. A parser takes (value, dotted key) and returns the typed value or raises.

Parser = Callable[[Any, str], Any]

_TOML_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
               (list, "an array"), (dict, "a table"))


def _given(value: Any) -> str:
    """How a TOML value looked, for messages: `"yes" (a string)`, `true (a boolean)`, `a table`."""
    kind = next((name for t, name in _TOML_KINDS if isinstance(value, t)), "a date/time")
    if isinstance(value, (list, dict)):
        return kind
    literal = json.dumps(value) if isinstance(value, (bool, str)) else str(value)
    return f"{literal} ({kind})"


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _example(key: str, value: Any) -> str:
    """`name = value` in TOML for a key, or the bare value for an array element (`allowed_miners[0]`)."""
    literal = json.dumps(value)
    return f"`{literal}`" if key.endswith("]") else f"`{_leaf(key)} = {literal}`"


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(
            key, f"expected true or false, got {_given(value)}",
            f"write {_example(key, True)} or {_example(key, False)}, without quotes",
        )
    return value


# The largest whole number anything downstream can hold (SQLite INTEGER, the RPCs' 64-bit fields).
MAX_INT = 2**63 - 1


def _int(minimum: int, maximum: int | None = None, example: int | None = None) -> Parser:
    """Whole numbers in [minimum, maximum]. TOML `true` is a Python int too, so it is refused here."""
    too_big = maximum is None
    maximum = MAX_INT if maximum is None else maximum
    if not too_big:
        expected = f"a whole number from {minimum} to {maximum}"
    else:
        expected = ("a positive whole number" if minimum == 1 else f"a whole number >= {minimum}") + f" (at most {maximum})"

    def parse(value: Any, key: str) -> int:
        in_range = isinstance(value, int) and minimum <= value <= maximum
        if isinstance(value, bool) or not in_range:
            fix = f"write it like {_example(key, minimum if example is None else example)}"
            if isinstance(value, str):
                fix += ", a number without quotes"
            raise _invalid(key, f"expected {expected}, got {_given(value)}", fix)
        return value

    return parse


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(key, f"expected a non-empty string, got {_given(value)}",
                       f'write it like {_example(key, "name")}')
    return value


def _db_url(value: Any, key: str) -> str:
    """The embedded manager's database: a PostgreSQL URL, or sqlite:PATH (see manager.sql.parse_db)."""
    from damocles_py.manager.sql import parse_db

    text = _string(value, key)
    try:
        parse_db(text, key)
    except ValueError as e:
        problem, _, fix = str(e).removeprefix(f"{key}: ").partition(". Fix: ")
        raise _invalid(key, problem, fix or "write it like \"postgresql://user:pw@host:5432/db\"") from None
    return text


def _host_port(example: str) -> Parser:
    """A `host:port` address (IPv6 hosts in brackets: `[::1]:9000`)."""

    def parse(value: Any, key: str) -> str:
        host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not (host and port.isdigit() and 1 <= int(port) <= 65535):
            raise _invalid(key, f"expected a host:port address, got {_given(value)}",
                           f'write it like {_example(key, example)}')
        return value

    return parse


def _sector_size(value: Any, key: str) -> SectorSize:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _invalid(key, f"expected a sector size, got {_given(value)}",
                       f'write it like {_example(key, "2KiB")}')
    try:
        return SectorSize.parse(value, key)
    except InvalidInput as e:
        # The proofs layer words it as "<problem>; <what to write instead>".
        problem, _, fix = e.problem.partition("; ")
        raise _invalid(key, problem, fix or "use a supported sector size such as 2KiB or 32GiB") from e


def _plan(value: Any, key: str) -> Plan:
    if isinstance(value, str) and value in Plan.__members__:
        return Plan[value]
    if value in ("unseal", "wdpost"):
        raise _invalid(key, f"the {value} plan is not supported yet by damocles-py",
                       f"use one of {', '.join(Plan.__members__)}, or keep this thread on damocles-worker")
    names = ", ".join(Plan.__members__)
    close = difflib.get_close_matches(str(value).lower(), Plan.__members__, n=1)
    hint = f"did you mean `{close[0]}`? The plans are {names}" if close else f"use one of {names}"
    raise _invalid(key, f"unknown plan {_given(value)}", hint)


def _manager_addr(value: Any, key: str) -> str:
    """damocles' forms (multiaddr, http(s) URL: the Venus JSON-RPC client) or `host:port` (our gRPC)."""
    from damocles_py.config.schema import is_venus_addr
    from damocles_py.manager.venus.addr import AddressError, parse_manager_addr

    if isinstance(value, str) and is_venus_addr(value.strip()):
        try:
            parse_manager_addr(value)
        except AddressError as e:
            problem, _, fix = str(e).partition("; ")
            raise _invalid(key, problem.removeprefix("rpc_client.addr "), fix) from None
        return value.strip()
    try:
        return _host_port("127.0.0.1:1789")(value, key)
    except ConfigError as e:
        e.fix += ' for our manager (gRPC), or a damocles-manager address like `addr = "/ip4/127.0.0.1/tcp/1789"`'
        raise


def _manager_addrs(value: Any, key: str) -> tuple[str, ...]:
    """`addr = "host:port"`, or several of our managers on one database in order of preference:
    `addr = ["10.0.0.1:1789", "10.0.0.2:1789"]` (the worker fails over between them)."""
    from damocles_py.config.schema import is_venus_addr

    if not isinstance(value, list):
        return (_manager_addr(value, key),)
    several = '`addr = ["10.0.0.1:1789", "10.0.0.2:1789"]`'
    if not value:
        raise _invalid(key, "an empty array names no sector manager", f"write one address, or several like {several}")
    addrs = tuple(_manager_addr(item, f"{key}[{i}]") for i, item in enumerate(value))
    for i, addr in enumerate(addrs):
        if len(addrs) > 1 and is_venus_addr(addr):
            raise _invalid(f"{key}[{i}]", f"{addr!r} is a damocles-manager (Venus) address; failover between "
                           "several addresses is for our managers (gRPC host:port) only",
                           "name the one damocles-manager as a string, or list only host:port addresses")
        if addr in addrs[:i]:
            raise _invalid(f"{key}[{i}]", f"{addr!r} is listed twice", "list each manager once")
    return addrs


def _headers(value: Any, key: str) -> dict[str, str]:
    """`rpc_client.headers = { Name = "value" }`: extra HTTP headers of every Venus call."""
    table = _table(value, key)
    for name, text in table.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise _invalid(_join(key, name), "not a valid HTTP header name", "use letters, digits and dashes")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise _invalid(_join(key, name), f"expected a one-line string, got {_given(text)}",
                           f'write it like `{name} = "value"`')
    return dict(table)


def _sectorstore(location: Path, key: str):
    from damocles_py.store.layout import SectorStoreJsonError, read_sectorstore_json

    try:
        return read_sectorstore_json(location)
    except SectorStoreJsonError as e:
        raise _invalid(key, str(e), "fix the file as `damocles-manager util storage gen-sectorstore-json` "
                       "writes it (ID and Name strings, ReadOnly a boolean), or remove it") from None


def _list_of(parse_item: Parser) -> Parser:
    def parse(value: Any, key: str) -> tuple:
        if not isinstance(value, list):
            raise _invalid(key, f"expected an array, got {_given(value)}",
                           f"write it in brackets, e.g. `{_leaf(key)} = [...]`")
        return tuple(parse_item(item, f"{key}[{i}]") for i, item in enumerate(value))

    return parse


# Decimal, so "500ms" is exactly 0.5 and "1.1s" exactly 1.1
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
                   "d": Decimal(86400), "w": Decimal(7 * 86400)}
# damocles' (humantime's) spellings too: its examples write `pc1 = "5min"`
_DURATION_ALIASES = {"msec": "ms", "sec": "s", "secs": "s", "second": "s", "seconds": "s", "min": "m",
                     "mins": "m", "minute": "m", "minutes": "m", "hr": "h", "hrs": "h", "hour": "h",
                     "hours": "h", "day": "d", "days": "d", "week": "w", "weeks": "w"}
# longest first, so "5ms" is not read as 5m + s, nor "5min" as 5m + "in"
_DURATION_UNIT_NAMES = sorted([*_DURATION_UNITS, *_DURATION_ALIASES], key=len, reverse=True)
_DURATION_PART = rf"(\d+(?:\.\d+)?)\s*({'|'.join(_DURATION_UNIT_NAMES)})"
_DURATION_RE = re.compile(rf"(?:{_DURATION_PART}\s*)+")


MAX_DURATION = 365 * 86400.0


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number (seconds) or a string like "500ms", "30s", "5m", "1h", "1m30s".

    Zero and negative durations are refused: every duration in the config is a timeout or the
    period of a loop, where 0 means a busy loop or an instant failure.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        seconds = float(sum(Decimal(n) * _DURATION_UNITS[_DURATION_ALIASES.get(u, u)]
                            for n, u in re.findall(_DURATION_PART, value)))
    else:
        raise _invalid(key, f"expected a duration, got {_given(value)}",
                       f'write it like {_example(key, "30s")} '
                       "(units ms, s, m or min, h, d, w; combine like \"1m30s\"), or a number of seconds")
    if not (math.isfinite(seconds) and seconds > 0):
        raise _invalid(key, f"the duration must be more than zero, got {_given(value)}",
                       f'write a positive duration like {_example(key, "30s")}')
    if seconds > MAX_DURATION:  # beyond what a timer can wait for (Python's TIMEOUT_MAX is ~292 years)
        raise _invalid(key, f"the duration is longer than the maximum of 365 days, got {_given(value)}",
                       f'write at most {_example(key, "365d")}')
    return seconds


_BYTE_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_BYTES_RE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|TiB)?")


def parse_bytes(value: Any, key: str) -> int:
    """Bytes from a whole number or a string like "2KiB", "512MiB", "32GiB" (binary units only)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        n = value
    else:
        m = _BYTES_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        n = int(m.group(1)) * _BYTE_UNITS[m.group(2) or ""] if m else None
    if n is not None and n <= MAX_INT:
        return n
    if n is not None:
        raise _invalid(key, f"the size is larger than {MAX_INT} bytes, got {_given(value)}",
                       f'write a smaller size like {_example(key, "512MiB")}')
    raise _invalid(key, f"expected a size in bytes, got {_given(value)}",
                   f'write it like {_example(key, "512MiB")} '
                   "(units B, KiB, MiB, GiB, TiB: binary, so KiB rather than KB), or a whole number of bytes")


# The kernel's CPU list syntax, as damocles' `cgroup.cpuset` and /sys/devices/system/cpu/online write it.
_CPU_RANGE_RE = re.compile(r"(\d+)(?:-(\d+))?")
_MAX_CPU = 1 << 16  # beyond any kernel's NR_CPUS: refused before a huge range is expanded


def parse_cpu_list(text: str) -> tuple[int, ...] | None:
    """"0-3,6,8-11" as sorted CPU numbers; None when it is not in that syntax."""
    cpus: set[int] = set()
    for part in text.split(","):
        m = _CPU_RANGE_RE.fullmatch(part.strip())
        if m is None:
            return None
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if high < low or high >= _MAX_CPU:
            return None
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: Collection[int]) -> str:
    """The inverse of parse_cpu_list: (0, 1, 2, 3, 6) -> "0-3,6"."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def machine_cpus() -> tuple[int, ...]:
    """The CPUs a child of this process can be pinned to: the kernel's affinity mask (which a
    container's cpuset narrows), else every CPU the OS counts."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return tuple(range(os.cpu_count() or 1))


def _cpuset(value: Any, key: str) -> tuple[str, tuple[int, ...]]:
    """damocles' `cgroup.cpuset`: (the text as written, its CPUs), each CPU checked to exist here."""
    cpus = parse_cpu_list(value) if isinstance(value, str) else None
    if not cpus:
        raise _invalid(key, f"expected a CPU list, got {_given(value)}",
                       'write CPU numbers and ranges like `cgroup.cpuset = "0-3,6,8-11"`')
    have = machine_cpus()
    missing = sorted(set(cpus) - set(have))
    if missing:
        names = f"CPU {missing[0]}" if len(missing) == 1 else f"CPUs {format_cpu_list(missing)}"
        raise _invalid(key, f"names {names}, this machine has CPUs {format_cpu_list(have)}",
                       f'name only CPUs this machine has, e.g. `cgroup.cpuset = "{format_cpu_list(have)}"`')
    return "".join(value.split()), cpus  # as written, less spaces (the kernel's cpuset.cpus takes none)


# ---------------------------------------------------------------------------------------------
# Tables


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _table_name(key: str) -> str:
    """How a table's header reads in the file: `[sealing_thread.sealing]`, `[[attached]]`."""
    bare = re.sub(r"\[\d+\]", "", key)
    return f"[[{bare}]]" if key.endswith("]") else f"[{bare}]"


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(key, f"expected a table, got {_given(value)}",
                       f"write it as a table: a `{_table_name(key)}` header line followed by its keys")
    return value


def _check_keys(table: dict[str, Any], prefix: str, known: Collection[str]) -> None:
    for name in table:
        if name in known:
            continue
        close = difflib.get_close_matches(name.lower(), list(known), n=1)
        if close:
            fix = f"did you mean `{close[0]}`?"
        elif not prefix:
            fix = f"remove it; the top-level sections are: {', '.join(known)}"
        else:
            fix = f"remove it; the keys {_table_name(prefix)} accepts are: {', '.join(known)}"
        raise _invalid(_join(prefix, name), "unknown key", fix)


def _fields(value: Any, key: str, spec: dict[str, Parser]) -> dict[str, Any]:
    """Parse a table by its spec: only the keys present, each with its parser; unknown keys fail."""
    table = _table(value, key)
    _check_keys(table, key, spec)
    return {name: parse(table[name], _join(key, name)) for name, parse in spec.items() if name in table}


def _fields_of(spec: dict[str, Parser]) -> Parser:
    return lambda value, key: _fields(value, key, spec)


def _dataclass_of(cls: type, spec: dict[str, Parser]) -> Parser:
    """A parser for a table whose keys are exactly the dataclass's fields (missing ones: defaults)."""
    return lambda value, key: cls(**_fields(value, key, spec))


def _array_of_tables(value: Any, key: str) -> list[dict[str, Any]]:
    if isinstance(value, dict):  # `[sealing_thread]` where `[[sealing_thread]]` was meant
        raise _invalid(key, "expected an array of tables, got a single table",
                       f"write the header with double brackets, `{_table_name(key + '[0]')}`, once per entry")
    if not isinstance(value, list):
        raise _invalid(key, f"expected an array of tables, got {_given(value)}",
                       f"write one `{_table_name(key + '[0]')}` block per entry")
    return [_table(item, f"{key}[{i}]") for i, item in enumerate(value)]


def _required(values: dict[str, Any], name: str, key: str, example: str) -> Any:
    if name not in values:
        raise _invalid(_join(key, name), "missing", f"add `{name} = {example}` to `{_table_name(key)}`")
    return values[name]


def _check_unique(items: tuple, attr: str, key: str, fix: str) -> None:
    first_at: dict[Any, int] = {}
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in first_at:
            problem = f"{json.dumps(str(value))} is already used by {key}[{first_at[value]}]"
            raise _invalid(f"{key}[{i}].{attr}", problem, fix)
        first_at[value] = i


def _unsupported(value: Any, key: str) -> Any:
    """A damocles-worker key this worker does not implement yet: refused, never silently ignored."""
    raise _invalid(key, "not supported yet by damocles-py (it would be read and then do nothing)",
                   f"remove `{_leaf(key)}` from the file")


def _not_yet(what: str, fix: str) -> Parser:
    """A damocles-worker feature this worker does not have yet: refused in one line naming the key."""

    def parse(value: Any, key: str) -> Any:
        raise _invalid(key, f"{what.format(leaf=_leaf(key))} is {NOT_YET} by damocles-py", fix)

    return parse


def _removed(problem: str, fix: str) -> Parser:
    def parse(value: Any, key: str) -> Any:
        raise _invalid(key, problem, fix)

    return parse


def _empty_only(what: str, fix: str) -> Parser:
    """A damocles table of a feature we lack: accepted empty (as the example configs have it)."""

    def parse(value: Any, key: str) -> dict:
        table = _table(value, key)
        for name in table:
            _not_yet(what, fix)(table[name], _join(key, name))
        return table

    return parse


def _off_only(value: Any, key: str) -> None:
    """A feature not implemented yet: `false` says what happens anyway; `true` is refused."""
    if _bool(value, key):
        _unsupported(value, key)


_SEALING: dict[str, Parser] = {
    "allowed_miners": _list_of(_int(0, example=1000)),
    "allowed_sizes": _list_of(_sector_size),
    "enable_deals": _bool,
    "disable_cc": _bool,
    "max_deals": _int(0, example=1),
    "min_deal_space": parse_bytes,
    "max_retries": _int(0, example=5),
    "seal_interval": parse_duration,
    "recover_interval": parse_duration,
    "rpc_polling_interval": parse_duration,
    "ignore_proof_check": _bool,
    "request_task_max_retries": _unsupported,
    "verify_after_pc2": _off_only,
}
_SEALING_FIELDS = {f.name for f in dataclasses.fields(SealingConfig)}


def _sealing_fields(value: Any, key: str) -> dict[str, Any]:
    """A [sealing] table's values; keys accepted only in their `false` form carry nothing."""
    return {k: v for k, v in _fields(value, key, _SEALING).items() if k in _SEALING_FIELDS}


_HOT_THREAD: dict[str, Parser] = {"plan": _plan, "sealing": _sealing_fields}  # a [[sealing_thread]] minus location


_RPC_SERVER: dict[str, Parser] = {"host": _string, "port": _int(1, 65535, 17890)}
_ADMIN_SERVER: dict[str, Parser] = {"host": _string, "port": _int(1, 65535, 17891)}


def _ip(value: Any, key: str) -> str:
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise _invalid(key, f"expected an IP address, got {_given(value)}",
                       f'write it like {_example(key, "10.0.0.5")}') from None
_METRICS: dict[str, Parser] = {"enable": _bool, "http_listen": _host_port("127.0.0.1:9000")}
_STAGE_LIMITS: dict[str, Parser] = {
    **dict.fromkeys(STAGE_NAMES, _int(1, example=1)),
    **dict.fromkeys(STAGES_NOT_YET, _not_yet("a limit on the `{leaf}` stage", "remove the line: no plan here runs that stage")),
}
_EXTERNAL_NOT_YET = _not_yet("[[processors.{leaf}]], an external processor for a stage no plan here runs,",
                             "remove the section")


def _stagger(value: Any, key: str) -> float:
    seconds = parse_duration(value, key)
    if seconds < MIN_STAGGER:  # damocles silently drops such a value; we say so instead
        raise _invalid(key, f"the interval must be at least 1s (damocles ignores a shorter one), got {_given(value)}",
                       f'write at least {_example(key, "1s")}, or remove the line for no spacing')
    return seconds


_LIMITATION: dict[str, Parser] = {
    "concurrent": _fields_of(_STAGE_LIMITS),
    "staggered": _fields_of({
        **dict.fromkeys(STAGE_NAMES, _stagger),
        **dict.fromkeys(STAGES_NOT_YET, _not_yet("spacing the `{leaf}` stage",
                                                 "remove the line: no plan here runs that stage")),
    }),
}


def _ext_locks(value: Any, key: str) -> dict[str, int]:
    """`[processors.ext_locks] gpu = 1`: named semaphores, held by the processors that list them."""
    return {name: _int(1, example=1)(count, _join(key, name)) for name, count in _table(value, key).items()}


def _arg(value: Any, key: str) -> str:
    if not isinstance(value, str) or "\0" in value:
        raise _invalid(key, f"expected a string, got {_given(value)}",
                       f'write it in quotes, like {_example(key, "--flag")}')
    return value


def _envs(value: Any, key: str) -> dict[str, str]:
    """`envs = { NAME = "value" }`: set in the child's environment (after the inherited one)."""
    envs = {}
    for name, text in _table(value, key).items():
        if not name or "=" in name or "\0" in name:
            raise _invalid(_join(key, json.dumps(name)), "not a valid environment variable name",
                           "use letters, digits and underscores, like `FIL_PROOFS_USE_MULTICORE_SDR`")
        if not isinstance(text, str) or "\0" in text:
            example = json.dumps(text) if isinstance(text, (bool, int, float)) else "value"
            raise _invalid(_join(key, name), f"expected a string, got {_given(text)}",
                           f'write the value in quotes, like `{name} = "{example}"`')
        envs[name] = text
    return envs


def _group_name(value: Any, key: str) -> str:
    """`cgroup.group_name`: the parent cgroup, a relative path under the cgroup root."""
    name = _string(value, key)
    if name.startswith("/") or ".." in name.split("/") or "\0" in name:
        raise _invalid(key, f"expected a cgroup name below the cgroup root, got {_given(value)}",
                       f'write a relative name like {_example(key, "vc-worker")}')
    return name


def _unique(parse_item: Parser, fix: str) -> Parser:
    """A list whose items may appear once (a lock taken twice by one task would wait on itself)."""

    def parse(value: Any, key: str) -> tuple:
        items = _list_of(parse_item)(value, key)
        for i, item in enumerate(items):
            if item in items[:i]:
                raise _invalid(f"{key}[{i}]", f"{json.dumps(item)} is listed twice", fix)
        return items

    return parse


_SECTIONS = ("worker", "sector_manager", "sealing", "sealing_thread", "attached", "metrics", "processors")
# Sections damocles-worker 0.13 no longer reads (its example files still carry them).
_RETIRED: dict[str, Parser] = {
    "attached_selection": _empty_only("[attached_selection] (damocles-worker 0.13 ignores it too)", "remove the line"),
    "remote_store": _removed("[remote_store] was removed from damocles-worker (0.13 ignores it, leaving no "
                             "persist store)", "write it as an `[[attached]]` block with the same `name` and `location`"),
}


class _Loader:
    """The sections that hold paths, which resolve against the config file's directory `base`."""

    def __init__(self, base: Path):
        self.base = base

    def resolve(self, path: Path) -> Path:
        # normpath, not resolve(): the directory may not exist yet, and symlinks are the user's business
        return Path(os.path.normpath(self.base / path))

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise _invalid(key, f"expected a path, got {_given(value)}",
                           f'write it like {_example(key, "./dir")}')
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # `~name` of a user that does not exist (or no home directory)
            user = value.split("/", 1)[0]
            raise _invalid(key, f"cannot expand {json.dumps(user)}: no such user or home directory",
                           f'write the full path, e.g. {_example(key, "/home/<user>/" + value.partition("/")[2])}') from None
        return self.resolve(path)

    def config(self, data: dict[str, Any], path: Path) -> Config:
        _check_keys(data, "", _SECTIONS + tuple(_RETIRED))
        for name, parse in _RETIRED.items():
            if name in data:
                parse(data[name], name)
        sealing = SealingConfig(**_sealing_fields(data.get("sealing", {}), "sealing"))
        worker = self.worker(data.get("worker", {}), "worker")
        attached = self.attached(data.get("attached", []), "attached")
        attached += self.scanned_stores(worker.scan_persist_stores, attached)
        return Config(
            path=path,
            worker=worker,
            sector_manager=self.sector_manager(data.get("sector_manager", {}), "sector_manager"),
            sealing=sealing,
            sealing_threads=self.threads(data.get("sealing_thread", []), "sealing_thread", sealing),
            attached=attached,
            metrics=_dataclass_of(MetricsConfig, _METRICS)(data.get("metrics", {}), "metrics"),
            processors=self.processors(data.get("processors", {}), "processors"),
        )

    def worker(self, value: Any, key: str) -> WorkerConfig:
        values = _fields(value, key, {
            "name": _string,
            "state_dir": self.path,
            "ping_interval": parse_duration,
            "local_pieces_dirs": _list_of(self.path),
            "local_pieces_dir": self.path,  # damocles' legacy single form
            "scan_persist_stores": _list_of(_string),
            "ScanPersistStores": _list_of(_string),  # damocles' alias
            "rpc_server": _dataclass_of(RpcServerConfig, _RPC_SERVER),
            "admin_server": _dataclass_of(AdminServerConfig, _ADMIN_SERVER),
            "venus_admin_trust": _list_of(_ip),
            "sector_log_max_bytes": parse_bytes,
            "sector_log_retention": parse_duration,
        })
        values.setdefault("name", socket.gethostname())
        values.setdefault("state_dir", self.resolve(WorkerConfig.state_dir))
        if "local_pieces_dir" in values:
            values["local_pieces_dirs"] = (values.pop("local_pieces_dir"), *values.get("local_pieces_dirs", ()))
        patterns = values.pop("ScanPersistStores", ()) + values.get("scan_persist_stores", ())
        values["scan_persist_stores"] = tuple(str(self.resolve(Path(p).expanduser())) for p in patterns)
        return WorkerConfig(**values)

    def sector_manager(self, value: Any, key: str) -> SectorManagerConfig:
        values = _fields(value, key, {
            "rpc_client": _fields_of({"addr": _manager_addrs, "headers": _headers, "token_file": self.path}),
            "piece_token": _string,
            "rpc_timeout": parse_duration,
            "embedded": self.embedded,
        })
        rpc_client = values.pop("rpc_client", None)
        if rpc_client is not None and "addr" not in rpc_client:  # else the embedded manager would run
            _required(rpc_client, "addr", _join(key, "rpc_client"), '"/ip4/127.0.0.1/tcp/1789"')
        if rpc_client and "embedded" in values:  # one of them would be ignored
            raise _invalid(_join(key, "embedded"), "given together with rpc_client.addr",
                           "keep rpc_client.addr to use that manager, or [sector_manager.embedded] for the "
                           "built-in simulated one, not both")
        rpc_client = rpc_client or {}
        # The embedded manager's defaults hold a relative state_dir, so parse them too.
        values.setdefault("embedded", self.embedded({}, _join(key, "embedded")))
        addr, *fallback = rpc_client.get("addr", (None,))  # several: the first is preferred
        values["token_file"] = rpc_client.get("token_file")
        values["headers"] = rpc_client.get("headers", {})
        return SectorManagerConfig(addr=addr, fallback_addrs=tuple(fallback), **values)

    def embedded(self, value: Any, key: str) -> EmbeddedManagerConfig:
        values = _fields(value, key, {
            "miner": _int(0, example=1000),
            "sector_size": _sector_size,
            "state_dir": self.path,
            "pieces_dir": self.path,
            "block_time": parse_duration,
            "pre_commit_delay_epochs": _int(0, example=3),
            "ticket_expiry_epochs": _int(1, example=900),
            "seed_expiry_epochs": _int(1, example=900),
            "worker_timeout": parse_duration,
            "db": _db_url,
        })
        values.setdefault("state_dir", self.resolve(EmbeddedManagerConfig.state_dir))
        return EmbeddedManagerConfig(**values)

    def threads(self, value: Any, key: str, sealing: SealingConfig) -> tuple[SealingThreadConfig, ...]:
        tables = _array_of_tables(value, key)
        if not tables:
            raise _invalid(key, "no sealing threads are configured", f"add at least one: {_MINIMAL_THREAD}")
        threads = tuple(self.thread(t, f"{key}[{i}]", i, sealing) for i, t in enumerate(tables))
        _check_unique(threads, "location", key, "give each sealing thread its own location: "
                      "threads sharing a directory would overwrite each other's sector files")
        return threads

    def thread(self, value: Any, key: str, index: int, sealing: SealingConfig) -> SealingThreadConfig:
        values = _fields(value, key, {"location": self.path, "plan": _plan, "sealing": _sealing_fields})
        location = _required(values, "location", key, '"./store/t0"')
        static = SealingThreadConfig(
            index=index,
            location=location,
            plan=values.get("plan", Plan.sealer),
            sealing=dataclasses.replace(sealing, **values.get("sealing", {})),  # per-thread overrides win
        )
        return load_hot_thread_config(static)  # a bad hot file stops the start like any config error

    def attached(self, value: Any, key: str) -> tuple[AttachedStoreConfig, ...]:
        stores = tuple(self.store(t, f"{key}[{i}]") for i, t in enumerate(_array_of_tables(value, key)))
        _check_unique(stores, "name", key,
                      "give each attached store a unique `name`: sectors are recorded by store name")
        return stores

    def store(self, value: Any, key: str) -> AttachedStoreConfig:
        values = _fields(value, key, {"name": _string, "location": self.path, "readonly": _bool, "create": _bool})
        location = _required(values, "location", key, '"./persist/a"')
        # As damocles: the name and read-only flag of the config, else of the store's sectorstore.json,
        # else the canonical path and read-write.
        found = _sectorstore(location, _join(key, "location"))
        values.setdefault("name", found and found.name or os.path.realpath(location))
        values.setdefault("readonly", bool(found and found.readonly))
        return AttachedStoreConfig(**values)

    def scanned_stores(self, patterns: tuple[str, ...], attached: tuple[AttachedStoreConfig, ...]
                       ) -> tuple[AttachedStoreConfig, ...]:
        """`[worker] scan_persist_stores`: every glob match holding a sectorstore.json is a store."""
        key = "worker.scan_persist_stores"
        stores = []
        for pattern in patterns:
            for match in sorted(glob.glob(pattern)):
                location = Path(match)
                found = _sectorstore(location, key)
                if found is not None:
                    stores.append(AttachedStoreConfig(name=found.name or os.path.realpath(location),
                                                      location=location, readonly=bool(found.readonly)))
        names = {store.name: f"attached[{i}]" for i, store in enumerate(attached)}
        for store in stores:
            if store.name in names:
                raise _invalid(key, f"store {json.dumps(store.name)} found at {store.location} is already "
                               f"named by {names[store.name]}",
                               "give every store a unique name (sectorstore.json `Name`, or `name` in [[attached]])")
            names[store.name] = str(store.location)
        return tuple(stores)

    def processors(self, value: Any, key: str) -> ProcessorsConfig:
        values = _fields(value, key, {
            "limitation": _fields_of(_LIMITATION),
            "limit": _fields_of(_STAGE_LIMITS),  # damocles' legacy name of limitation.concurrent
            "static_tree_d": self.static_tree_d,
            "ext_locks": _ext_locks,
            **dict.fromkeys(PROCESSOR_STAGES, self.processor_entries),
            **dict.fromkeys(PROCESSORS_NOT_YET, _EXTERNAL_NOT_YET),
        })
        limitation = values.get("limitation", {})
        concurrent = limitation.get("concurrent")
        ext_locks = values.get("ext_locks", {})
        external = {stage: values[stage] for stage in PROCESSOR_STAGES if values.get(stage)}
        for stage, entries in external.items():
            for i, entry in enumerate(entries):
                for j, lock in enumerate(entry.locks):
                    if lock not in ext_locks:
                        declared = f"the declared ones are {', '.join(ext_locks)}" if ext_locks else "none is declared"
                        raise _invalid(f"{key}.{stage}[{i}].locks[{j}]",
                                       f"lock {json.dumps(lock)} is not in [processors.ext_locks] ({declared})",
                                       f"declare it with `{lock} = 1` under [processors.ext_locks], or remove it here")
        return ProcessorsConfig(
            limitation_concurrent=values.get("limit", {}) if concurrent is None else concurrent,
            limitation_staggered=limitation.get("staggered", {}),
            ext_locks=ext_locks,
            external=external,
            static_tree_d=values.get("static_tree_d", {}),
        )

    def processor_entries(self, value: Any, key: str) -> tuple[ProcessorConfig, ...]:
        """`[[processors.<stage>]]`: one long-lived child process per entry."""
        stage = _leaf(key)
        return tuple(self.processor(t, f"{key}[{i}]", stage) for i, t in enumerate(_array_of_tables(value, key)))

    def processor(self, value: Any, key: str, stage: str) -> ProcessorConfig:
        values = _fields(value, key, {
            "bin": self.program,
            "args": _list_of(_arg),
            "envs": _envs,
            "inherit_envs": _bool,
            "concurrent": _int(1, example=2),
            "locks": _unique(_string, "list each lock once: a task holds one slot of each"),
            "cgroup": _fields_of({"cpuset": _cpuset, "group_name": _group_name}),
            "numa_preferred": _int(0, example=0),  # not checked against this box: no NUMA is a no-op
            "stable_wait": parse_duration,
            "auto_restart": _bool,
        })
        cgroup = values.pop("cgroup", {})
        if "cpuset" in cgroup:
            values["cpuset_text"], values["cpuset"] = cgroup["cpuset"]
        if "group_name" in cgroup:
            values["cgroup_group_name"] = cgroup["group_name"]
        return ProcessorConfig(stage=stage, **values)

    def program(self, value: Any, key: str) -> str:
        """`bin`: a program name looked up on PATH, or a path (relative: to the config file's
        directory). Checked now, so that a typo stops the start rather than a stage later."""
        if isinstance(value, str) and value.strip() and not any(c in value for c in "/\0") and value[0] != "~":
            if shutil.which(value) is None:
                raise _invalid(key, f"no program {json.dumps(value)} on PATH",
                               f'write its full path, like {_example(key, "/usr/local/bin/" + value)}')
            return value
        path = self.path(value, key)
        try:
            problem = None if path.is_file() and os.access(path, os.X_OK) else (
                "is not an executable file" if path.exists() else "does not exist")
        except OSError as e:  # a name too long, a loop of links
            problem = f"cannot be checked ({e.strerror})"
        if problem:
            raise _invalid(key, f"{path} {problem}",
                           "point it at the processor program (chmod +x it), or remove `bin` to run this worker's own")
        return str(path)

    def static_tree_d(self, value: Any, key: str) -> dict[SectorSize, Path]:
        files: dict[SectorSize, Path] = {}
        for name, file in _table(value, key).items():
            size = _sector_size(name, _join(key, name))
            if size in files:  # "2KiB" and "2048" are the same size
                raise _invalid(_join(key, name), f"sector size {size} is listed twice",
                               "keep one entry per size")
            files[size] = self.path(file, _join(key, name))
        return files
