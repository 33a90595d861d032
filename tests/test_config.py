"""The `sealing.toml` loader: a full valid file round trip, defaults, and every rejected case."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from damocles_py.config import Plan, SealingConfig
from damocles_py.config.load import ConfigError, load_config, parse_bytes, parse_config, parse_duration
from damocles_py.proofs import SectorSize

THREAD = '[[sealing_thread]]\nlocation = "./store/t0"\n'

FULL = """
[worker]
name = "worker-a"
state_dir = "state"
ping_interval = "15s"
local_pieces_dirs = ["./pieces", "/abs/pieces"]

[worker.rpc_server]
host = "0.0.0.0"
port = 17999

[sector_manager]
rpc_timeout = "1m30s"

[sector_manager.embedded]
miner = 1234
sector_size = "8MiB"
state_dir = "./manager"
pieces_dir = "./pieces"
block_time = "500ms"
pre_commit_delay_epochs = 5
ticket_expiry_epochs = 100
seed_expiry_epochs = 200

[sealing]
allowed_miners = [1000, 1001]
allowed_sizes = ["2KiB", "8MiB"]
enable_deals = true
disable_cc = false
max_deals = 3
min_deal_space = "1KiB"
max_retries = 7
seal_interval = "10s"
recover_interval = 20
rpc_polling_interval = "3m"
ignore_proof_check = true
verify_after_pc2 = false

[[sealing_thread]]
location = "./store/t0"

[[sealing_thread]]
location = "./store/t1"
plan = "snapup"
[sealing_thread.sealing]
max_retries = 2
allowed_sizes = ["2KiB"]

[[attached]]
name = "store-a"
location = "./persist/a"
readonly = true

[[attached]]
location = "./persist/b"

[metrics]
enable = true
http_listen = "127.0.0.1:9100"

[processors.limitation.concurrent]
pc1 = 2
c2 = 1

[processors.static_tree_d]
"2KiB" = "./tree-d/2k.dat"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sealing.toml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str):
    return load_config(write(tmp_path, text))


def load_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'sealing.toml'}: ")
    assert err.path == tmp_path / "sealing.toml"
    assert err.problem and err.fix and f"Fix: {err.fix}" in message
    return err


# --- valid files ------------------------------------------------------------------------------


def test_full_config_round_trip(tmp_path):
    cfg = load(tmp_path, FULL)
    assert cfg.path == tmp_path / "sealing.toml"

    w = cfg.worker
    assert (w.name, w.state_dir, w.ping_interval) == ("worker-a", tmp_path / "state", 15.0)
    assert w.local_pieces_dirs == (tmp_path / "pieces", Path("/abs/pieces"))
    assert (w.rpc_server.host, w.rpc_server.port, w.rpc_server.address) == ("0.0.0.0", 17999, "0.0.0.0:17999")

    m = cfg.sector_manager
    assert m.is_embedded and m.addr is None and m.rpc_timeout == 90.0
    e = m.embedded
    assert (e.miner, e.sector_size, e.block_time) == (1234, SectorSize(8 << 20), 0.5)
    assert (e.state_dir, e.pieces_dir) == (tmp_path / "manager", tmp_path / "pieces")
    assert (e.pre_commit_delay_epochs, e.ticket_expiry_epochs, e.seed_expiry_epochs) == (5, 100, 200)

    s = cfg.sealing
    assert s == SealingConfig(
        allowed_miners=(1000, 1001), allowed_sizes=(SectorSize(2048), SectorSize(8 << 20)),
        enable_deals=True, disable_cc=False, max_deals=3, min_deal_space=1024, max_retries=7,
        seal_interval=10.0, recover_interval=20.0, rpc_polling_interval=180.0, ignore_proof_check=True,
    )

    t0, t1 = cfg.sealing_threads
    assert (t0.index, t0.location, t0.plan, t0.sealing) == (0, tmp_path / "store" / "t0", Plan.sealer, s)
    assert (t1.index, t1.location, t1.plan) == (1, tmp_path / "store" / "t1", Plan.snapup)
    # the thread's overrides win; everything else comes from [sealing]
    assert t1.sealing.max_retries == 2 and t1.sealing.allowed_sizes == (SectorSize(2048),)
    assert t1.sealing.allowed_miners == (1000, 1001) and t1.sealing.seal_interval == 10.0

    a, b = cfg.attached
    assert (a.name, a.location, a.readonly) == ("store-a", tmp_path / "persist" / "a", True)
    assert (b.name, b.location, b.readonly) == (str(tmp_path / "persist" / "b"), tmp_path / "persist" / "b", False)

    assert (cfg.metrics.enable, cfg.metrics.http_listen) == (True, "127.0.0.1:9100")
    assert cfg.processors.limitation_concurrent == {"pc1": 2, "c2": 1}
    assert cfg.processors.static_tree_d == {SectorSize(2048): tmp_path / "tree-d" / "2k.dat"}


def test_minimal_config_gets_defaults_with_absolute_paths(tmp_path):
    cfg = load(tmp_path, THREAD)
    assert cfg.worker.name == socket.gethostname()
    assert cfg.worker.state_dir == tmp_path / ".damocles-worker"
    assert cfg.worker.rpc_server.address == "127.0.0.1:17890"
    assert cfg.sector_manager.is_embedded
    assert cfg.sector_manager.embedded.state_dir == tmp_path / "manager"
    assert cfg.sector_manager.embedded.sector_size == SectorSize(2048)
    assert cfg.sealing == SealingConfig()
    assert cfg.attached == ()
    assert cfg.metrics.enable is False
    assert cfg.processors.limitation_concurrent == {} and cfg.processors.static_tree_d == {}


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path / "conf", '[[sealing_thread]]\nlocation = "../store/./t0"\n'))
    assert cfg.sealing_threads[0].location == tmp_path / "store" / "t0"
    assert all(p.is_absolute() for p in (cfg.worker.state_dir, cfg.sector_manager.embedded.state_dir))


@pytest.mark.parametrize("section", [
    '[sector_manager.rpc_client]\naddr = "10.0.0.2:1789"\n',
    '[sector_manager]\nrpc_client.addr = "10.0.0.2:1789"\n',
])
def test_remote_manager(tmp_path, section):
    cfg = load(tmp_path, section + THREAD)
    assert cfg.sector_manager.addr == "10.0.0.2:1789"
    assert not cfg.sector_manager.is_embedded


def test_parse_config_takes_parsed_data(tmp_path):
    cfg = parse_config({"sealing_thread": [{"location": "t0"}]}, tmp_path / "x.toml")
    assert cfg.sealing_threads[0].location == tmp_path / "t0"


@pytest.mark.parametrize("value, seconds", [
    ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1m30s", 90.0),
    ("1h 2m 3s", 3723.0), ("1.5s", 1.5), ("1d", 86400.0), (2, 2.0), (0.25, 0.25),
    # damocles' (humantime's) spellings: its examples write `pc1 = "5min"`
    ("5min", 300.0), ("1min 30s", 90.0), ("5 minutes", 300.0), ("2hours", 7200.0), ("1w", 604800.0),
    ("10sec", 10.0), ("3msec", 0.003), ("1day", 86400.0),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize("value", ["30", "soon", "5 fortnights", "5 minutesx", "-5s", "0s", 0, -1, True, [1], "1ms2"])
def test_parse_duration_rejects(value):
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "sealing.seal_interval")
    assert info.value.key == "sealing.seal_interval"
    assert "30s" in info.value.fix


@pytest.mark.parametrize("value, size", [
    ("2KiB", 2048), ("512MiB", 512 << 20), ("32GiB", 32 << 30), ("1024", 1024), ("7B", 7), (4096, 4096), (0, 0),
])
def test_parse_bytes(value, size):
    assert parse_bytes(value, "k") == size


@pytest.mark.parametrize("value", ["2KB", "1.5GiB", "lots", -1, True, 1.0])
def test_parse_bytes_rejects(value):
    with pytest.raises(ConfigError) as info:
        parse_bytes(value, "sealing.min_deal_space")
    assert info.value.key == "sealing.min_deal_space"
    assert "KiB" in info.value.fix


# --- invalid files: (file text, the key the error names, text the message must contain) -----------

INVALID = {
    # unknown keys, with did-you-mean
    "top-level typo": ("[[sealing_threads]]\nlocation = 'x'\n" + THREAD,
                       "sealing_threads", "did you mean `sealing_thread`?"),
    "sealing typo": ("[sealing]\nmax_retires = 3\n" + THREAD, "sealing.max_retires", "did you mean `max_retries`?"),
    "thread override typo": (THREAD + '[[sealing_thread]]\nlocation = "t1"\n'
                             '[sealing_thread.sealing]\nmax_retires = 1\n',
                             "sealing_thread[1].sealing.max_retires", "did you mean `max_retries`?"),
    "nested table typo": ("[sector_manager.embedded]\nsector_sise = '2KiB'\n" + THREAD,
                          "sector_manager.embedded.sector_sise", "did you mean `sector_size`?"),
    "rpc_server typo": ("[worker.rpc_server]\nprot = 1\n" + THREAD, "worker.rpc_server.prot", "did you mean `port`?"),
    "no close match lists keys": ("[metrics]\nzzz = 1\n" + THREAD, "metrics.zzz", "enable, http_listen"),
    "unknown section lists sections": ("[bogus]\n" + THREAD, "bogus", "worker, sector_manager, sealing"),
    "unknown stage": ("[processors.limitation.concurrent]\npc_1 = 1\n" + THREAD,
                      "processors.limitation.concurrent.pc_1", "did you mean `pc1`?"),
    "unknown stage, no match": ("[processors.limitation.concurrent]\nzzz = 1\n" + THREAD,
                                "processors.limitation.concurrent.zzz", "snap_encode"),
    # wrong types and ranges
    "string for int": ('[sealing]\nmax_retries = "5"\n' + THREAD, "sealing.max_retries", '"5" (a string)'),
    "bool for int": ("[sealing]\nmax_retries = true\n" + THREAD, "sealing.max_retries", "true (a boolean)"),
    "negative int": ("[sealing]\nmax_retries = -1\n" + THREAD, "sealing.max_retries", "a whole number >= 0"),
    "float for int": ("[sealing]\nmax_retries = 1.5\n" + THREAD, "sealing.max_retries", "1.5 (a float)"),
    "yes for bool": ('[sealing]\nenable_deals = "yes"\n' + THREAD, "sealing.enable_deals", "`enable_deals = true`"),
    "port too high": ("[worker.rpc_server]\nport = 70000\n" + THREAD, "worker.rpc_server.port", "from 1 to 65535"),
    "port zero": ("[worker.rpc_server]\nport = 0\n" + THREAD, "worker.rpc_server.port", "got 0 (an integer)"),
    "bad duration": ('[worker]\nping_interval = "soon"\n' + THREAD, "worker.ping_interval",
                     '`ping_interval = "30s"`'),
    "duration without unit": ('[sealing]\nseal_interval = "30"\n' + THREAD, "sealing.seal_interval",
                              "expected a duration"),
    "bad miner in list": ('[sealing]\nallowed_miners = ["f01000"]\n' + THREAD, "sealing.allowed_miners[0]", '"f01000"'),
    "list expected": ("[sealing]\nallowed_miners = 1000\n" + THREAD, "sealing.allowed_miners", "expected an array"),
    "zero concurrency": ("[processors.limitation.concurrent]\npc1 = 0\n" + THREAD,
                         "processors.limitation.concurrent.pc1", "a positive whole number"),
    "bad min_deal_space": ('[sealing]\nmin_deal_space = "1GB"\n' + THREAD, "sealing.min_deal_space",
                           "KiB rather than KB"),
    "bad listen address": ('[metrics]\nhttp_listen = "9000"\n' + THREAD, "metrics.http_listen", "host:port"),
    "bad manager address": ('[sector_manager.rpc_client]\naddr = "localhost"\n' + THREAD,
                            "sector_manager.rpc_client.addr", '`addr = "127.0.0.1:1789"`'),
    "section not a table": ("sealing = 5\n" + THREAD, "sealing", "expected a table"),
    "empty worker name": ('[worker]\nname = ""\n' + THREAD, "worker.name", "non-empty string"),
    # sector sizes (InvalidInput from the proofs layer becomes a ConfigError naming the key)
    "bad sector size": ('[sector_manager.embedded]\nsector_size = "3KiB"\n' + THREAD,
                        "sector_manager.embedded.sector_size", "2KiB, 8MiB, 512MiB, 32GiB, 64GiB"),
    "unparsable sector size": ('[sector_manager.embedded]\nsector_size = "big"\n' + THREAD,
                               "sector_manager.embedded.sector_size", "not a size"),
    "bad allowed size": ('[sealing]\nallowed_sizes = ["2KiB", "4KiB"]\n' + THREAD, "sealing.allowed_sizes[1]",
                         "not a supported sector size"),
    "bad tree_d size": ('[processors.static_tree_d]\n"2k" = "x.dat"\n' + THREAD, "processors.static_tree_d.2k",
                        "not a size"),
    # threads and attached stores
    "no threads": ('[worker]\nname = "w"\n', "sealing_thread", '`[[sealing_thread]]` followed by the line `location'),
    "single-bracket thread": ('[sealing_thread]\nlocation = "t0"\n', "sealing_thread", "`[[sealing_thread]]`"),
    "thread without location": ('[[sealing_thread]]\nplan = "sealer"\n', "sealing_thread[0].location",
                                'add `location = "./store/t0"`'),
    "unknown plan": (THREAD + '[[sealing_thread]]\nlocation = "t1"\nplan = "snap"\n', "sealing_thread[1].plan",
                     "sealer, snapup, rebuild"),
    "duplicate thread location": (THREAD + '[[sealing_thread]]\nlocation = "store/t0/"\n', "sealing_thread[1].location",
                                  "already used by sealing_thread[0]"),
    "attached without location": (THREAD + '[[attached]]\nname = "a"\n', "attached[0].location",
                                  'add `location = "./persist/a"`'),
    "duplicate attached name": (THREAD + '[[attached]]\nname = "a"\nlocation = "p1"\n'
                                '[[attached]]\nname = "a"\nlocation = "p2"\n', "attached[1].name",
                                "unique `name`"),
    # values beyond what anything downstream can hold (issue 7, item 18)
    "300 years": ('[sealing]\nrecover_interval = "109500d"\n' + THREAD, "sealing.recover_interval",
                  'at most `recover_interval = "365d"`'),
    "huge seconds": ("[worker]\nping_interval = 1e12\n" + THREAD, "worker.ping_interval", "maximum of 365 days"),
    "huge int": ("[sealing]\nmax_deals = 99999999999999999999\n" + THREAD, "sealing.max_deals",
                 "at most 9223372036854775807"),
    "huge miner": ("[sealing]\nallowed_miners = [99999999999999999999]\n" + THREAD, "sealing.allowed_miners[0]",
                   "at most 9223372036854775807"),
    "huge size": ('[sealing]\nmin_deal_space = "99999999999TiB"\n' + THREAD, "sealing.min_deal_space",
                  "larger than 9223372036854775807 bytes"),
    "unknown user home": ('[[sealing_thread]]\nlocation = "~nosuchuser/x"\n', "sealing_thread[0].location",
                          'cannot expand "~nosuchuser"'),
    # keys damocles-worker has that would be read and then do nothing here
    "request_task_max_retries": ("[sealing]\nrequest_task_max_retries = 3\n" + THREAD,
                                 "sealing.request_task_max_retries", "not supported yet"),
    "verify_after_pc2 on": ("[sealing]\nverify_after_pc2 = true\n" + THREAD, "sealing.verify_after_pc2",
                            "not supported yet"),
    "verify_after_pc2 on in a thread": (THREAD + "[sealing_thread.sealing]\nverify_after_pc2 = true\n",
                                        "sealing_thread[0].sealing.verify_after_pc2", "not supported yet"),
}


@pytest.mark.parametrize("text, key, expected", INVALID.values(), ids=INVALID.keys())
def test_invalid_config(tmp_path, text, key, expected):
    err = load_error(tmp_path, text)
    assert err.key == key
    assert f": {key}: " in str(err)
    assert expected in str(err)


def test_unknown_plan_suggests_close_name(tmp_path):
    err = load_error(tmp_path, '[[sealing_thread]]\nlocation = "t0"\nplan = "snap_up"\n')
    assert "did you mean `snapup`?" in err.fix


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.toml'}: config file not found. Fix: ")
    assert "[[sealing_thread]]" in info.value.fix


def test_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert info.value.path == tmp_path and "cannot read" in info.value.problem


def test_toml_syntax_error_names_the_line(tmp_path):
    err = load_error(tmp_path, THREAD + "[sealing]\nmax_retries = \n")
    assert err.key == "line 4"
    assert "invalid TOML" in err.problem and "column" in err.problem


def test_duplicate_key_is_a_syntax_error(tmp_path):
    err = load_error(tmp_path, "[sealing]\nmax_retries = 1\nmax_retries = 2\n" + THREAD)
    assert err.key == "line 3"
