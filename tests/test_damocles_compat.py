"""What a damocles operator already has (issue 8, "Config and CLI"): damocles-worker.toml files,
`damocles-worker` spellings, and damocles' on-disk layouts (sealing store `.holder`, persist store
`sectorstore.json`, `sealed/` and `cache/` file names).

The three example configs under tests/data/damocles/ are damocles' own files, verbatim (checked by
sha256 against the reference). Every key in them is either honoured with damocles' meaning or
refused with one line naming the key: the refusals are listed here one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import STARTUP_BUDGET, thread_db_rows, wait_until, worker_cli, write_config
from damocles_py.config.load import ConfigError, load_config, parse_config
from damocles_py.proofs import SectorSize
from test_processors_config import existing_cpusets

DATA = Path(__file__).parent / "data" / "damocles"

# sha256 of each file, from the reference (damocles-rpc.md §4)
EXAMPLES = {
    "damocles-worker.mock.toml": "89fa3f24e180b76149f5108ac6e4163d85c881d34b29d52153805121a94f717e",
    "docs-basic.toml": "1664301c0624ca6a3ea0ceca32cf92f7bb540664b0d9664b92608ce6338dc1f1",
    "docs-minimal.toml": "5acacad1a5cf361041e45f9729ed6eaf9869cab6ef618fcd722fc785175e8a29",
}

# `damocles-manager util storage gen-sectorstore-json` output, literally as the reference shows it
# (§5.3), with a uuid in place of "<random uuid v4>"
MANAGER_SECTORSTORE_JSON = """{
\t"ID": "0b8a2d47-4f0e-4a53-9b1e-2f6a2c0e7d11",
\t"Name": "",
\t"Path": "",
\t"Meta": null,
\t"Strict": true,
\t"ReadOnly": false,
\t"Weight": 1,
\t"AllowMiners": [],
\t"DenyMiners": [],
\t"Plugin": "",
\t"PluginName": ""
}"""
# the Lotus-style file damocles' unit test accepts (§5.3)
LOTUS_SECTORSTORE_JSON = json.dumps({
    "ID": "lotus-store-id", "Name": "", "Strict": False, "ReadOnly": True, "Weight": 10,
    "AllowMiners": ["t01000"], "DenyMiners": [], "PluginName": "", "Meta": {}, "CanSeal": True,
})


def refusals(data: dict, path: Path) -> tuple[list[str], object]:
    """Load parsed TOML, dropping each refused key until it loads: (the refused keys, the config).

    Each refusal must be one line that names the key and says it is not supported yet (or, for a
    section damocles itself removed, says so)."""
    refused = []
    while True:
        try:
            return refused, parse_config(data, path)
        except ConfigError as e:
            line = str(e)
            assert "\n" not in line and e.key and f": {e.key}: " in line
            assert "not supported yet" in line or "was removed from damocles-worker" in line, line
            refused.append(e.key)
            *parents, leaf = e.key.split(".")
            table = data
            for part in parents:
                table = table[part]
            del table[leaf]


def example(name: str, tmp_path: Path, replace: dict[str, str] | None = None, cpusets: bool = True
            ) -> tuple[dict, Path]:
    """A verbatim example copied into tmp_path (relative paths resolve there), parsed. With `cpusets`,
    its `cgroup.cpuset`s (cores 0-47 of a big box) are changed to CPUs this machine has."""
    text = (DATA / name).read_text()
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    if cpusets:
        text = existing_cpusets(text)
    path = tmp_path / name
    path.write_text(text)
    return tomllib.loads(text), path


def test_the_example_configs_are_damocles_own_files_verbatim():
    for name, digest in EXAMPLES.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


def test_mock_config_every_key_honoured_or_refused(tmp_path):
    with pytest.raises(ConfigError) as info:  # as it is: its first cpuset names cores this box lacks
        load_config(example("damocles-worker.mock.toml", tmp_path, cpusets=False)[1])
    assert info.value.key == "processors.pc1[0].cgroup.cpuset" and "this machine has CPUs" in str(info.value)

    refused, cfg = refusals(*example("damocles-worker.mock.toml", tmp_path))
    assert refused == []
    assert cfg.worker.scan_persist_stores == ()
    assert cfg.metrics.enable is True
    sm = cfg.sector_manager
    assert sm.addr == "/ip4/127.0.0.1/tcp/1789" and sm.is_venus and not sm.is_embedded
    assert cfg.sealing.enable_deals is True and cfg.sealing.max_retries == 3
    assert [t.location for t in cfg.sealing_threads] == [tmp_path / "mock-tmp" / f"store{i}" for i in (1, 2, 3)]
    assert all(t.sealing == cfg.sealing for t in cfg.sealing_threads)
    (store,) = cfg.attached  # no name: the canonical path, as damocles
    assert store.location == tmp_path / "mock-tmp" / "remote"
    assert store.name == os.path.realpath(tmp_path / "mock-tmp" / "remote") and not store.readonly
    assert cfg.processors.limitation_concurrent == {"add_pieces": 5, "pc1": 3, "pc2": 2, "c2": 1}
    assert cfg.processors.limitation_staggered == {"pc1": 60.0}
    assert {stage: len(entries) for stage, entries in cfg.processors.external.items()} == {
        "tree_d": 1, "pc1": 2, "pc2": 2, "c2": 1, "transfer": 1}
    assert cfg.processors.static_tree_d == {}


def test_docs_basic_config_every_key_honoured_or_refused(tmp_path):
    refused, cfg = refusals(*example("docs-basic.toml", tmp_path))
    assert refused == []
    assert {stage: len(entries) for stage, entries in cfg.processors.external.items()} == {
        "tree_d": 1, "pc1": 3, "pc2": 2, "c2": 1}
    assert cfg.metrics.enable is False and cfg.sector_manager.is_venus
    assert cfg.sealing.enable_deals is True and cfg.sealing.max_retries == 3
    assert len(cfg.sealing_threads) == 3 and len(cfg.attached) == 1
    assert cfg.processors.limitation_concurrent == {}


def test_docs_minimal_config_every_key_honoured_or_refused(tmp_path):
    data, path = example("docs-minimal.toml", tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "remote_store" and "[[attached]]" in info.value.fix
    # its placeholder address is refused as an address, naming damocles' forms
    del data["remote_store"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, path)
    assert info.value.key == "sector_manager.rpc_client.addr" and "/ip4/127.0.0.1/tcp/1789" in str(info.value)

    refused, cfg = refusals(*example("docs-minimal.toml", tmp_path, {"{some_ip}": "10.0.0.2"}))
    assert refused == ["remote_store"]
    assert cfg.sector_manager.addr == "/ip4/10.0.0.2/tcp/1789"
    assert len(cfg.sealing_threads) == 8
    assert cfg.processors.limitation_concurrent == {"pc1": 4, "pc2": 2, "c2": 1}  # [processors.limit], the old name
    pc1 = cfg.processors.external["pc1"]
    assert [(e.concurrent, e.numa_preferred, e.envs) for e in pc1] == [(2, n, {"FIL_PROOFS_USE_MULTICORE_SDR": "1"})
                                                                         for n in (0, 1)]
    assert cfg.processors.external["c2"][0].envs == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert cfg.processors.static_tree_d == {
        SectorSize(32 << 30): tmp_path / "{path to static tree_d for 32GiB}",
        SectorSize(64 << 30): tmp_path / "{path to static tree_d for 64GiB}",
    }


THREAD = '[[sealing_thread]]\nlocation = "./t0"\n'


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "damocles-worker.toml"
    path.write_text(text)
    return load_config(path)


def refused_line(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("text, key, words", [
    (THREAD.replace("./t0", "./t1") + 'plan = "unseal"\n', "sealing_thread[0].plan", "unseal plan is not supported yet"),
    (THREAD + 'plan = "wdpost"\n', "sealing_thread[0].plan", "wdpost plan is not supported yet"),
    ("[processors.limitation.concurrent]\nwindow_post = 1\n" + THREAD,
     "processors.limitation.concurrent.window_post", "`window_post` stage is not supported yet"),
    ("[[processors.unseal]]\nbin = \"./unseal\"\n" + THREAD, "processors.unseal", "external processor"),
    ("[[processors.sealing_daemons]]\n" + THREAD, "processors.sealing_daemons", "external processor"),
    ("[attached_selection]\nenable_space_weighted = true\n" + THREAD, "attached_selection.enable_space_weighted",
     "0.13 ignores it too"),
    ("[sealing]\nrequest_task_max_retries = 3\n" + THREAD, "sealing.request_task_max_retries", "not supported yet"),
])
def test_damocles_features_we_lack_are_refused_in_one_line_naming_the_key(tmp_path, text, key, words):
    line = refused_line(tmp_path, text)
    assert f": {key}: " in line and words in line


def test_damocles_keys_honoured(tmp_path):
    (tmp_path / "pieces-old").mkdir()
    cfg = load_text(tmp_path, """
[worker]
name = "worker-#1"
rpc_server.host = "192.168.1.100"
rpc_server.port = 17891
ping_interval = "10s"
local_pieces_dir = "./pieces-old"
local_pieces_dirs = ["./pieces"]

[sector_manager]
rpc_client.addr = "http://manager.lan:1789"
rpc_client.headers = { User-Agent = "jsonrpc-core-client" }
piece_token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.x"

[processors.limit]
pc1 = 9
[processors.limitation.concurrent]
pc1 = 4
transfer = 1
""" + THREAD + 'plan = "snapup"\nsealing.max_deals = 3\nsealing.min_deal_space = "8GiB"\n')
    w = cfg.worker
    assert (w.name, w.rpc_server.host, w.rpc_server.port, w.ping_interval) == ("worker-#1", "192.168.1.100", 17891, 10.0)
    assert w.local_pieces_dirs == (tmp_path / "pieces-old", tmp_path / "pieces")
    sm = cfg.sector_manager
    assert sm.is_venus and sm.headers == {"User-Agent": "jsonrpc-core-client"}
    assert sm.piece_token == "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.x"
    assert cfg.processors.limitation_concurrent == {"pc1": 4, "transfer": 1}  # limitation.concurrent wins
    (t,) = cfg.sealing_threads
    assert t.plan.value == "snapup" and (t.sealing.max_deals, t.sealing.min_deal_space) == (3, 8 << 30)


@pytest.mark.parametrize("addr, venus", [
    ("/ip4/10.0.0.2/tcp/1789", True), ("/ip4/10.0.0.2/tcp/1789/https", True), ("/dns4/mgr.lan/tcp/1789", True),
    ("/ip6/::1/tcp/1789", True), ("https://mgr.lan:1789", True), ("10.0.0.2:1789", False),
])
def test_manager_address_forms(tmp_path, addr, venus):
    cfg = load_text(tmp_path, f'[sector_manager]\nrpc_client.addr = "{addr}"\n' + THREAD)
    assert cfg.sector_manager.addr == addr and cfg.sector_manager.is_venus is venus


@pytest.mark.parametrize("addr, words", [
    ("/ip4/10.0.0.2/udp/1789", "expected /tcp/<port>"), ("/ip4/manager/tcp/1789", "not an ip4 address"),
    ("ftp://mgr:1789", "not http or https"), ("localhost", "/ip4/127.0.0.1/tcp/1789"),
])
def test_bad_manager_addresses_name_the_forms(tmp_path, addr, words):
    line = refused_line(tmp_path, f'[sector_manager]\nrpc_client.addr = "{addr}"\n' + THREAD)
    assert ": sector_manager.rpc_client.addr: " in line and words in line


def test_bad_headers_refused(tmp_path):
    line = refused_line(tmp_path, '[sector_manager]\nrpc_client.headers = { "Bad Name" = "x" }\n' + THREAD)
    assert 'sector_manager.rpc_client.headers.Bad Name: not a valid HTTP header name' in line
    line = refused_line(tmp_path, '[sector_manager]\nrpc_client.headers = { X-A = 1 }\n' + THREAD)
    assert "sector_manager.rpc_client.headers.X-A: expected a one-line string" in line


def test_hot_config_in_a_location_is_honoured(tmp_path):
    """damocles' `<location>/config.toml` (tests/test_processors_config.py tests it in depth)."""
    (tmp_path / "t0").mkdir()
    (tmp_path / "t0" / "config.toml").write_text('plan = "snapup"\n')
    (t,) = load_text(tmp_path, THREAD).sealing_threads
    assert t.plan.value == "snapup" and t.static.plan.value == "sealer"
    (tmp_path / "t0" / "config.toml").write_text('plan = "unseal"\n')
    line = refused_line(tmp_path, THREAD)
    assert line.startswith(f"{tmp_path / 't0' / 'config.toml'}: plan: ") and "not supported yet" in line


def test_sectorstore_json_names_attached_stores_and_scanned_ones(tmp_path):
    """[[attached]] without a name takes sectorstore.json's Name, else ID (the manager's file, literally);
    scan_persist_stores globs find stores by their sectorstore.json (a Lotus one too); others are skipped."""
    for d in ("a", "scan/b", "scan/c", "scan/empty"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "a" / "sectorstore.json").write_text(MANAGER_SECTORSTORE_JSON)
    (tmp_path / "scan" / "b" / "sectorstore.json").write_text(LOTUS_SECTORSTORE_JSON)
    (tmp_path / "scan" / "c" / "sectorstore.json").write_text('{"ID": "c-id", "Name": "store-c"}')
    cfg = load_text(tmp_path, '[worker]\nscan_persist_stores = ["./scan/*"]\n' + THREAD
                    + '[[attached]]\nlocation = "./a"\n')
    a, b, c = cfg.attached
    assert (a.name, a.location, a.readonly) == ("0b8a2d47-4f0e-4a53-9b1e-2f6a2c0e7d11", tmp_path / "a", False)
    assert (b.name, b.location, b.readonly) == ("lotus-store-id", tmp_path / "scan" / "b", True)
    assert (c.name, c.readonly) == ("store-c", False)

    # damocles' alias of the key; a duplicate name is refused in one line
    (tmp_path / "scan" / "c" / "sectorstore.json").write_text('{"Name": "0b8a2d47-4f0e-4a53-9b1e-2f6a2c0e7d11"}')
    line = refused_line(tmp_path, '[worker]\nScanPersistStores = ["./scan/*"]\n' + THREAD + '[[attached]]\nlocation = "./a"\n')
    assert ": worker.scan_persist_stores: " in line and "already named by attached[0]" in line
    (tmp_path / "scan" / "c" / "sectorstore.json").write_text('{"ReadOnly": "yes"}')
    line = refused_line(tmp_path, '[worker]\nscan_persist_stores = ["./scan/*"]\n' + THREAD)
    assert "sectorstore.json: ReadOnly must be a boolean" in line


# ---------------------------------------------------------------------------------------------
# CLI spellings, through the real command line


def test_version_and_unsupported_commands_answer_in_one_line(tmp_path):
    for flag in ("-V", "--version"):
        out = worker_cli(flag).stdout
        assert out.startswith("damocles-worker v") and out.count("\n") == 1
    for args in (["processor", "pc1", "--hugepage-files-path", "/mnt/huge"], ["processor", "window_post"],
                 ["store", "hugepage-file-init", "-n", "0", "-s", "1GiB", "-c", "2", "--path", "/mnt/huge"],
                 ["worker", "enable-dump", "--child-pid", "7", "--dump-dir", str(tmp_path)],
                 ["worker", "disable_dump", "--child_pid", "7"]):
        result = worker_cli(*args, check=False)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "not supported yet" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_store_commands_write_damocles_layouts(tmp_path):
    # sealing-init: damocles' empty `.holder`; a location damocles prepared (.holder, data/, meta/) is accepted
    worker_cli("store", "sealing-init", "-l", str(tmp_path / "s1"), str(tmp_path / "s2"))
    for d in ("s1", "s2"):
        assert (tmp_path / d / ".holder").read_bytes() == b"" and (tmp_path / d / "data").is_dir()
    # file-init: mkdir -p as damocles; with --name (ours) the manager's sectorstore.json, read back by the loader
    worker_cli("store", "file-init", "-l", str(tmp_path / "p" / "plain"))
    assert (tmp_path / "p" / "plain").is_dir() and not (tmp_path / "p" / "plain" / "sectorstore.json").exists()
    worker_cli("store", "file-init", "--loc", str(tmp_path / "p" / "named"), "--name", "persist-x", "--read-only")
    doc = json.loads((tmp_path / "p" / "named" / "sectorstore.json").read_text())
    assert set(doc) == set(json.loads(MANAGER_SECTORSTORE_JSON))
    assert (doc["ID"], doc["Name"], doc["ReadOnly"], doc["Weight"]) == ("persist-x", "persist-x", True, 1)
    clash = worker_cli("store", "file-init", "-l", str(tmp_path / "p" / "named"), "--name", "other", check=False)
    assert clash.returncode == 2 and "already names this store 'persist-x'" in clash.stderr
    cfg = load_text(tmp_path, '[worker]\nscan_persist_stores = ["./p/*"]\n[[sealing_thread]]\nlocation = "./s1"\n')
    assert [(s.name, s.readonly) for s in cfg.attached] == [("persist-x", True)]
    # generator tree-d: the CC tree-d file damocles' [processors.static_tree_d] points at
    out = worker_cli("generator", "tree-d", "-s", "2KiB", "-p", str(tmp_path / "tree-d")).stdout
    tree_d = tmp_path / "tree-d" / "sc-02-data-tree-d.dat"
    assert tree_d.stat().st_size == 2 * 2048 - 32 and str(tree_d) in out


def test_location_prepared_by_damocles_is_accepted(tmp_path):
    from damocles_py.store.location import location_problem

    loc = tmp_path / "damocles-loc"
    for d in ("data", "meta"):
        (loc / d).mkdir(parents=True)
    assert location_problem(loc, "t0") is not None  # no marker: an empty mount point looks like this
    (loc / ".holder").touch()
    assert location_problem(loc, "t0") is None
    legacy = tmp_path / "ours-before"
    legacy.mkdir()
    (legacy / ".damocles-sealing-location").write_text("{}")  # our earlier marker
    assert location_problem(legacy, "t0") is None


# ---------------------------------------------------------------------------------------------
# A real daemon: a persist store laid out as damocles documents it, and damocles' CLI spellings


def test_daemon_persists_into_a_damocles_store_where_damocles_looks(tmp_path, daemon_factory):
    """An unnamed [[attached]] store holding the manager's sectorstore.json is known by its ID; the
    sector's files land in it under damocles' names (sealed/<sid>, cache/<sid>/...). The seed is
    made never to come, so no C2 runs. Meanwhile the CLI is driven in damocles' spellings."""
    store = tmp_path / "persist" / "damocles"
    worker_cli("store", "file-init", "-l", str(store))  # damocles: mkdir -p, no marker
    (store / "sectorstore.json").write_text(MANAGER_SECTORSTORE_JSON)
    cfg_path = write_config(tmp_path, embedded={"pre_commit_delay_epochs": 10**6})
    text = cfg_path.read_text()
    default_store = '[[attached]]\nname = "persist-a"\nlocation = "./persist/a"\ncreate = true\n'
    assert default_store in text
    cfg_path.write_text(text.replace(default_store, '[[attached]]\nlocation = "./persist/damocles"\n'))

    # `daemon` finds its config through DAMOCLES_WORKER_CONFIG, as damocles'
    env = {**os.environ, "DAMOCLES_WORKER_CONFIG": str(cfg_path)}
    import subprocess
    check = subprocess.run([sys.executable, "-m", "damocles_py.cli.worker", "daemon", "--check"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    daemon = daemon_factory(cfg_path, max_sectors=1)
    store_id = "0b8a2d47-4f0e-4a53-9b1e-2f6a2c0e7d11"
    assert [s.name for s in daemon.config.attached] == [store_id]
    location = tmp_path / "store" / "t0"
    wait_until(lambda: thread_db_rows(location, "SELECT 1 FROM sectors WHERE state = 'PersistanceSubmitted'"),
               STARTUP_BUDGET * 2, "the sector to be persisted")
    sid = "s-t01000-1"
    assert (store / "sealed" / sid).stat().st_size == 2048
    cache = sorted(p.name for p in (store / "cache" / sid).iterdir() if not p.name.startswith("."))
    assert cache == ["p_aux", "sc-02-data-tree-r-last.dat", "t_aux"]
    record = json.loads(thread_db_rows(location, "SELECT data FROM sectors WHERE sector_id IS NOT NULL")[0][0])
    assert store_id in json.dumps(record)  # the sector is recorded in the store by its damocles name

    # worker options before the subcommand (damocles), and after it (ours, kept)
    for args in (["worker", "-c", str(cfg_path), "list"], ["worker", "list", "-c", str(cfg_path)],
                 ["worker", "--config", str(cfg_path), "list", "--json"]):
        out = worker_cli(*args).stdout
        assert "PersistanceSubmitted" in out, (args, out)
    admin = daemon.config.worker.admin_server.address
    assert "PersistanceSubmitted" in worker_cli("worker", "-H", admin, "list").stdout
    paused = worker_cli("worker", "-c", str(cfg_path), "pause", "-i", "0")
    assert paused.returncode == 0
    wait_until(lambda: "paused" in worker_cli("worker", "-c", str(cfg_path), "list").stdout.lower(),
               STARTUP_BUDGET, "the thread to pause")
    resumed = worker_cli("worker", "--config", str(cfg_path), "resume", "--index", "0", "-s", "PersistanceSubmitted")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


def test_manager_section_without_an_address_is_not_taken_for_the_embedded_manager(tmp_path):
    """damocles requires rpc_client.addr; a config with rpc_client keys but no addr must not quietly
    seal against our simulated chain, and an address beside [sector_manager.embedded] is ambiguous."""
    line = refused_line(tmp_path, '[sector_manager]\nrpc_client.headers = { A = "b" }\n' + THREAD)
    assert ": sector_manager.rpc_client.addr: missing" in line and "/ip4/127.0.0.1/tcp/1789" in line
    line = refused_line(tmp_path, '[sector_manager]\nrpc_client.addr = "/ip4/10.0.0.2/tcp/1789"\n'
                                  '[sector_manager.embedded]\nminer = 1000\n' + THREAD)
    assert ": sector_manager.embedded: given together with rpc_client.addr" in line


def test_location_with_a_damocles_sector_in_flight_is_refused(tmp_path):
    """damocles empties data/ after each sector; files in its data/ folders mean a sector it was
    sealing, which this worker cannot continue: `daemon --check` says so, naming the files."""
    cfg = write_config(tmp_path)
    data = tmp_path / "store" / "t0" / "data"
    (data / "cache").mkdir(parents=True)
    (data / "sealed").mkdir()
    (data / "sealed" / "s-t01000-7").write_bytes(b"")
    check = worker_cli("daemon", "--check", "-c", str(cfg), check=False)
    assert check.returncode == 1
    (line,) = [l for l in check.stdout.splitlines() if l.startswith("problem: ")]
    assert "sealing_thread[0].location" in line and "data/sealed/s-t01000-7" in line and "-s Aborted" in line
    (data / "sealed" / "s-t01000-7").unlink()  # what damocles' cleanup does: empty folders are fine
    assert worker_cli("daemon", "--check", "-c", str(cfg), check=False).returncode == 0
