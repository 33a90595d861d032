"""`[processors]` (issue 9): external processors, ext_locks, staggered starts, with damocles' keys and
meanings; and a sealing thread's hot config, `<location>/config.toml` (damocles §1.5).

Config parsing only (fast): running the processors is tested with the daemon elsewhere.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from damocles_py.config import Plan, SealingConfig
from damocles_py.config.load import (
    ConfigError, format_cpu_list, load_config, load_hot_thread_config, machine_cpus, parse_cpu_list,
)
from damocles_py.config.schema import ProcessorConfig
from damocles_py.proofs import SectorSize

THREAD = '[[sealing_thread]]\nlocation = "./store/t0"\n'
DAMOCLES = Path(__file__).parent / "data" / "damocles"  # damocles' example files, verbatim
HAVE = machine_cpus()


def load(tmp_path: Path, text: str):
    path = tmp_path / "sealing.toml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


def one_line_error(tmp_path: Path, text: str, key: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    line = str(info.value)
    assert "\n" not in line and info.value.key == key, line
    assert line.startswith(f"{tmp_path / 'sealing.toml'}: {key}: ") and ". Fix: " in line, line
    return line


def existing_cpusets(text: str) -> str:
    """Every (uncommented) `cgroup.cpuset` of a damocles example changed to CPUs this box has:
    "0-1", "0", "1", ... in turn."""
    choices = [format_cpu_list(HAVE), str(HAVE[0]), str(HAVE[-1])]
    count = iter(range(1000))
    return re.sub(r'(?m)^(cgroup\.cpuset = )"[^"]*"', lambda m: f'{m[1]}"{choices[next(count) % 3]}"', text)


def processors_section(name: str) -> str:
    """The `[processors]` section of a damocles example file, verbatim (it is the last section)."""
    text = (DAMOCLES / name).read_text()
    return text[text.index("[processors"):]


# --- every key ----------------------------------------------------------------------------------


def test_every_processor_key_parsed(tmp_path):
    plugin = tmp_path / "bin" / "pc1-plugin"
    plugin.parent.mkdir()
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    cfg = load(tmp_path, f"""
        [processors.limitation.concurrent]
        pc1 = 2
        [processors.limitation.staggered]
        pc1 = "5min"
        pc2 = "1m30s"
        c2 = 1
        [processors.ext_locks]
        gpu = 1
        disk = 2

        [[processors.pc1]]
        bin = "./bin/pc1-plugin"
        args = ["--a", "1", ""]
        envs = {{ FIL_PROOFS_USE_MULTICORE_SDR = "1", RUST_LOG = "info" }}
        inherit_envs = false
        concurrent = 2
        locks = ["disk"]
        cgroup.cpuset = "{format_cpu_list(HAVE)}"
        cgroup.group_name = "vc-worker/pc1"
        numa_preferred = 1
        stable_wait = "10s"
        auto_restart = false

        [[processors.pc1]]
        cgroup.cpuset = "{HAVE[0]}"

        [[processors.pc2]]
        bin = "sh"
        locks = ["gpu"]
        [[processors.c2]]
        locks = ["gpu", "disk"]
        [[processors.tree_d]]
        """ + THREAD)
    p = cfg.processors
    assert p.limitation_concurrent == {"pc1": 2}
    assert p.limitation_staggered == {"pc1": 300.0, "pc2": 90.0, "c2": 1.0}
    assert p.ext_locks == {"gpu": 1, "disk": 2}
    assert set(p.external) == {"pc1", "pc2", "c2", "tree_d"}  # a stage without entries runs in the daemon
    first, second = p.external["pc1"]
    assert first == ProcessorConfig(
        stage="pc1", bin=str(plugin), args=("--a", "1", ""),
        envs={"FIL_PROOFS_USE_MULTICORE_SDR": "1", "RUST_LOG": "info"}, inherit_envs=False, concurrent=2,
        locks=("disk",), cpuset=HAVE, cpuset_text=format_cpu_list(HAVE), cgroup_group_name="vc-worker/pc1",
        numa_preferred=1, stable_wait=10.0, auto_restart=False,
    )
    assert (second.cpuset, second.cpuset_text) == ((HAVE[0],), str(HAVE[0]))
    (pc2,) = p.external["pc2"]
    assert (pc2.bin, pc2.locks) == ("sh", ("gpu",))  # a bare name: found on PATH, spawned by name
    assert p.external["c2"][0].locks == ("gpu", "disk")
    # an empty entry: damocles' defaults (this worker's own `processor tree_d`, 5s, restarted, env inherited)
    assert p.external["tree_d"] == (ProcessorConfig(stage="tree_d"),)
    d = p.external["tree_d"][0]
    assert (d.bin, d.args, d.inherit_envs, d.auto_restart, d.stable_wait, d.cpuset, d.cgroup_group_name) == (
        None, None, True, True, 30.0, None, "vc-worker")


def test_no_processors_section_runs_everything_in_the_daemon(tmp_path):
    p = load(tmp_path, THREAD).processors
    assert (p.external, p.ext_locks, p.limitation_staggered, p.limitation_concurrent) == ({}, {}, {}, {})


def test_legacy_limit_alias_and_limitation_concurrent_wins(tmp_path):
    assert load(tmp_path, "[processors.limit]\npc1 = 3\n" + THREAD).processors.limitation_concurrent == {"pc1": 3}
    cfg = load(tmp_path, "[processors.limit]\npc1 = 3\n[processors.limitation.concurrent]\npc2 = 1\n" + THREAD)
    assert cfg.processors.limitation_concurrent == {"pc2": 1}


@pytest.mark.parametrize("text, cpus", [
    ("0", (0,)), ("0-3,6,8-11", (0, 1, 2, 3, 6, 8, 9, 10, 11)), (" 1 , 0 ", (0, 1)), ("0-1,1", (0, 1)),
])
def test_cpu_list_syntax(text, cpus):
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


@pytest.mark.parametrize("text", ["", "a", "0-", "-1", "3-1", "0,,1", "0-10:2", "1-99999999999"])
def test_cpu_list_syntax_rejects(text):
    assert parse_cpu_list(text) is None


# --- damocles' documented examples (damocles-rpc.md §4.1 mock toml, §4.2 basic example) -----------


@pytest.mark.parametrize("name", ["damocles-worker.mock.toml", "docs-basic.toml"])
def test_damocles_example_processors_load_once_cpusets_exist(tmp_path, name):
    cfg = load(tmp_path, THREAD + existing_cpusets(processors_section(name)))
    p = cfg.processors
    pc1 = p.external["pc1"]
    assert [e.numa_preferred for e in pc1] == ([0, 1] if name.startswith("damocles") else [0, 0, 1])
    assert all(e.cpuset and set(e.cpuset) <= set(HAVE) for e in pc1)
    assert len(p.external["pc2"]) == 2 and p.external["pc2"][0].cpuset is None  # its cpuset is commented out
    (c2,) = p.external["c2"]
    assert c2.cpuset and c2.bin is None and c2.auto_restart
    assert p.external["tree_d"] == (ProcessorConfig(stage="tree_d"),)
    if name.startswith("damocles"):
        assert pc1[0].envs == {"FIL_PROOFS_USE_MULTICORE_SDR": "1"}
        assert p.limitation_staggered == {"pc1": 60.0}  # "1min", damocles' spelling
        assert p.limitation_concurrent == {"add_pieces": 5, "pc1": 3, "pc2": 2, "c2": 1}
        assert p.external["transfer"] == (ProcessorConfig(stage="transfer"),)
    else:
        assert pc1[0].envs == {"RUST_LOG": "info"}
        assert (p.limitation_staggered, p.ext_locks, p.limitation_concurrent) == ({}, {}, {})
        assert "transfer" not in p.external


@pytest.mark.parametrize("name", ["damocles-worker.mock.toml", "docs-basic.toml"])
def test_damocles_example_processors_with_their_own_cpusets_are_one_line_errors(tmp_path, name):
    section = processors_section(name)
    first = re.search(r'(?m)^cgroup\.cpuset = "([^"]*)"', section)[1]  # the first pc1 entry's
    missing = sorted(set(parse_cpu_list(first)) - set(HAVE))
    if not missing:
        pytest.skip(f"this machine has CPUs {format_cpu_list(HAVE)}, all that {first} names")
    line = one_line_error(tmp_path, THREAD + section, "processors.pc1[0].cgroup.cpuset")
    assert f"names CPU{'s' if len(missing) > 1 else ''} {format_cpu_list(missing)}, " \
           f"this machine has CPUs {format_cpu_list(HAVE)}" in line
    assert f'`cgroup.cpuset = "{format_cpu_list(HAVE)}"`' in line


def test_the_c2_cpuset_32_47_of_the_basic_example_is_a_one_line_error(tmp_path):
    if set(range(32, 48)) <= set(HAVE):
        pytest.skip("this machine has CPUs 32-47")
    section = existing_cpusets(processors_section("docs-basic.toml"))  # all but c2's, as written
    section = re.sub(r'(\[\[processors\.c2\]\]\ncgroup\.cpuset = )"[^"]*"', r'\1"32-47"', section)
    assert 'cgroup.cpuset = "32-47"' in section
    line = one_line_error(tmp_path, THREAD + section, "processors.c2[0].cgroup.cpuset")
    assert f"names CPUs {format_cpu_list(sorted(set(range(32, 48)) - set(HAVE)))}, this machine has CPUs" in line


# --- refused, each in one line naming the key --------------------------------------------------

BIG_CPU = max(HAVE) + 1
INVALID = {
    "unknown key": ("[[processors.pc1]]\nconcurent = 2\n", "processors.pc1[0].concurent", "did you mean `concurrent`?"),
    "unknown cgroup key": ("[[processors.pc1]]\ncgroup.cpus = \"0\"\n", "processors.pc1[0].cgroup.cpus",
                           "did you mean `cpuset`?"),
    "single table": ("[processors.pc1]\nconcurrent = 2\n", "processors.pc1", "`[[processors.pc1]]`"),
    "unknown stage": ("[[processors.pc3]]\n", "processors.pc3", "did you mean"),
    "no c1 processor": ("[[processors.c1]]\n", "processors.c1", "unknown key"),
    "unseal": ("[[processors.unseal]]\n", "processors.unseal", "not supported yet"),
    "window_post": ("[[processors.window_post]]\n", "processors.window_post", "not supported yet"),
    "sealing_daemons": ("[[processors.sealing_daemons]]\n", "processors.sealing_daemons", "not supported yet"),
    "undeclared lock": ("[[processors.c2]]\nlocks = [\"gpu\"]\n", "processors.c2[0].locks[0]",
                        'lock "gpu" is not in [processors.ext_locks] (none is declared). Fix: declare it with '
                        "`gpu = 1` under [processors.ext_locks]"),
    "misspelt lock": ("[processors.ext_locks]\ngpu0 = 1\n[[processors.pc2]]\n[[processors.pc2]]\nlocks = [\"gpu1\"]\n",
                      "processors.pc2[1].locks[0]", "the declared ones are gpu0"),
    "lock twice": ("[processors.ext_locks]\ngpu = 1\n[[processors.c2]]\nlocks = [\"gpu\", \"gpu\"]\n",
                   "processors.c2[0].locks[1]", '"gpu" is listed twice'),
    "lock not a list": ("[processors.ext_locks]\ngpu = 1\n[[processors.c2]]\nlocks = \"gpu\"\n",
                        "processors.c2[0].locks", "expected an array"),
    "zero lock": ("[processors.ext_locks]\ngpu = 0\n", "processors.ext_locks.gpu", "a positive whole number"),
    "string lock count": ("[processors.ext_locks]\ngpu = \"1\"\n", "processors.ext_locks.gpu", "without quotes"),
    "cpuset syntax": ("[[processors.pc1]]\ncgroup.cpuset = \"0-\"\n", "processors.pc1[0].cgroup.cpuset",
                      'expected a CPU list, got "0-" (a string). Fix: write CPU numbers and ranges like'),
    "reversed range": ("[[processors.pc1]]\ncgroup.cpuset = \"1-0\"\n", "processors.pc1[0].cgroup.cpuset",
                       "expected a CPU list"),
    "cpuset number": ("[[processors.pc1]]\ncgroup.cpuset = 0\n", "processors.pc1[0].cgroup.cpuset",
                      "0 (an integer)"),
    "missing cpu": (f"[[processors.pc1]]\ncgroup.cpuset = \"{BIG_CPU}\"\n", "processors.pc1[0].cgroup.cpuset",
                    f"names CPU {BIG_CPU}, this machine has CPUs {format_cpu_list(HAVE)}"),
    "absolute group": ("[[processors.pc1]]\ncgroup.group_name = \"/sys/fs/cgroup\"\n",
                       "processors.pc1[0].cgroup.group_name", "below the cgroup root"),
    "concurrent zero": ("[[processors.pc1]]\nconcurrent = 0\n", "processors.pc1[0].concurrent",
                        "a positive whole number"),
    "numa negative": ("[[processors.pc1]]\nnuma_preferred = -1\n", "processors.pc1[0].numa_preferred",
                      "a whole number >= 0"),
    "stable_wait": ("[[processors.pc1]]\nstable_wait = \"soon\"\n", "processors.pc1[0].stable_wait",
                    "expected a duration"),
    "auto_restart": ("[[processors.pc1]]\nauto_restart = \"yes\"\n", "processors.pc1[0].auto_restart",
                     "`auto_restart = true`"),
    "inherit_envs": ("[[processors.pc1]]\ninherit_envs = 1\n", "processors.pc1[0].inherit_envs", "true or false"),
    "args not a list": ("[[processors.pc1]]\nargs = \"processor pc1\"\n", "processors.pc1[0].args",
                        "expected an array"),
    "arg not a string": ("[[processors.pc1]]\nargs = [\"processor\", 1]\n", "processors.pc1[0].args[1]",
                         "expected a string"),
    "env not a string": ("[[processors.pc1]]\nenvs = { CUDA_VISIBLE_DEVICES = 0 }\n",
                         "processors.pc1[0].envs.CUDA_VISIBLE_DEVICES", '`CUDA_VISIBLE_DEVICES = "0"`'),
    "env bad name": ("[[processors.pc1]]\nenvs = { \"A=B\" = \"1\" }\n", "processors.pc1[0].envs.\"A=B\"",
                     "not a valid environment variable name"),
    "envs not a table": ("[[processors.pc1]]\nenvs = [\"A=1\"]\n", "processors.pc1[0].envs", "expected a table"),
    "bin missing": ("[[processors.pc1]]\nbin = \"./dist/bin/damocles-worker-plugin-pc1\"\n",
                    "processors.pc1[0].bin", "damocles-worker-plugin-pc1 does not exist"),
    "bin not on PATH": ("[[processors.pc1]]\nbin = \"no-such-damocles-plugin\"\n", "processors.pc1[0].bin",
                        'no program "no-such-damocles-plugin" on PATH'),
    "bin a directory": ("[[processors.pc1]]\nbin = \"./store\"\n", "processors.pc1[0].bin",
                        "is not an executable file"),
    "staggered under 1s": ("[processors.limitation.staggered]\npc1 = \"500ms\"\n",
                           "processors.limitation.staggered.pc1", "at least 1s (damocles ignores a shorter one)"),
    "staggered zero": ("[processors.limitation.staggered]\npc1 = 0\n", "processors.limitation.staggered.pc1",
                       "more than zero"),
    "staggered typo": ("[processors.limitation.staggered]\npc_1 = \"1min\"\n",
                       "processors.limitation.staggered.pc_1", "did you mean `pc1`?"),
    "staggered not yet": ("[processors.limitation.staggered]\nunseal = \"1min\"\n",
                          "processors.limitation.staggered.unseal", "not supported yet"),
    "staggered bad": ("[processors.limitation.staggered]\npc1 = \"1 fortnight\"\n",
                      "processors.limitation.staggered.pc1", "expected a duration"),
}


@pytest.mark.parametrize("text, key, words", INVALID.values(), ids=INVALID.keys())
def test_invalid_processors(tmp_path, text, key, words):
    (tmp_path / "store").mkdir()
    line = one_line_error(tmp_path, text + THREAD, key)
    assert words in line, line


def test_bin_not_executable(tmp_path):
    (tmp_path / "plugin").write_text("#!/bin/sh\n")  # mode 0644
    line = one_line_error(tmp_path, '[[processors.c2]]\nbin = "plugin"\n' + THREAD, "processors.c2[0].bin")
    assert "no program" in line  # a bare name is looked up on PATH, as damocles spawns it
    line = one_line_error(tmp_path, '[[processors.c2]]\nbin = "./plugin"\n' + THREAD, "processors.c2[0].bin")
    assert f"{tmp_path / 'plugin'} is not an executable file" in line and "chmod +x" in line


# --- the hot per-thread config, <location>/config.toml -------------------------------------------

HOT_BASE = """
[sealing]
max_retries = 7
seal_interval = "10s"
enable_deals = true

[[sealing_thread]]
location = "./t0"
[sealing_thread.sealing]
max_retries = 2
recover_interval = "2m"
"""


def hot(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "t0" / "config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_hot_config_merges_over_the_thread_and_reverts_when_deleted(tmp_path):
    (static,) = load(tmp_path, HOT_BASE).sealing_threads
    assert static.static is None and load_hot_thread_config(static) is static  # no file: unchanged

    path = hot(tmp_path, 'plan = "snapup"\n[sealing]\nmax_retries = 9\nallowed_sizes = ["2KiB"]\n')
    t = load_hot_thread_config(static)
    assert (t.index, t.location, t.plan) == (0, tmp_path / "t0", Plan.snapup)
    # defaults <- [sealing] <- [[sealing_thread]].sealing <- the hot file
    assert t.sealing == dataclasses.replace(SealingConfig(), max_retries=9, allowed_sizes=(SectorSize(2048),),
                                            seal_interval=10.0, enable_deals=True, recover_interval=120.0)
    assert t.static is static

    # re-read on every call; the config it returned can be passed back in
    path.write_text('sealing.seal_interval = "1m"\n')
    t = load_hot_thread_config(t)
    assert t.plan == Plan.sealer and (t.sealing.max_retries, t.sealing.seal_interval) == (2, 60.0)

    path.unlink()  # deleting the file reverts to sealing.toml's config
    assert load_hot_thread_config(t) is static

    hot(tmp_path, "# nothing yet\n")  # an empty file changes nothing
    assert load_hot_thread_config(static) is static


def test_hot_config_applies_at_load(tmp_path):
    hot(tmp_path, 'plan = "rebuild"\n')
    (t,) = load(tmp_path, HOT_BASE).sealing_threads
    assert t.plan == Plan.rebuild and t.sealing.max_retries == 2
    assert t.static.plan == Plan.sealer


HOT_INVALID = {
    "syntax": ('plan = snapup\n', "line 1", "invalid TOML"),
    "unknown key": ('plann = "snapup"\n', "plann", "did you mean `plan`?"),
    "unknown key, no match": ('zzz = 1\n', "zzz", "a hot config holds only `plan` and `[sealing]` keys"),
    "location": ('location = "./t1"\n', "location", "cannot change in its hot config"),
    "bad plan": ('plan = "snap"\n', "plan", "sealer, snapup, rebuild"),
    "plan not yet": ('plan = "wdpost"\n', "plan", "not supported yet"),
    "sealing typo": ('[sealing]\nmax_retires = 1\n', "sealing.max_retires", "did you mean `max_retries`?"),
    "sealing value": ('sealing.seal_interval = "soon"\n', "sealing.seal_interval", "expected a duration"),
    "sealing not a table": ('sealing = 1\n', "sealing", "expected a table"),
    "not utf-8": (b'plan = "\xff"\n', None, "not UTF-8"),
}


@pytest.mark.parametrize("text, key, words", HOT_INVALID.values(), ids=HOT_INVALID.keys())
def test_bad_hot_config_is_one_line_naming_the_file(tmp_path, text, key, words):
    (static,) = load(tmp_path, HOT_BASE).sealing_threads
    path = hot(tmp_path, text)
    for attempt in (lambda: load_hot_thread_config(static), lambda: load(tmp_path, HOT_BASE)):
        with pytest.raises(ConfigError) as info:  # at a reload, and at the daemon's start
            attempt()
        line = str(info.value)
        assert "\n" not in line and info.value.path == path and info.value.key == key, line
        assert line.startswith(f"{path}: ") and words in line and ". Fix: " in line, line


def test_unreadable_hot_config(tmp_path):
    (static,) = load(tmp_path, HOT_BASE).sealing_threads
    (tmp_path / "t0" / "config.toml").mkdir(parents=True)  # a real read failure, even as root
    with pytest.raises(ConfigError) as info:
        load_hot_thread_config(static)
    assert str(info.value).startswith(f"{tmp_path / 't0' / 'config.toml'}: cannot read this thread's hot config")


def test_daemon_start_with_a_missing_cpu_or_a_bad_hot_config_is_one_line_and_creates_nothing(tmp_path):
    """Through the real command line: the daemon stops before anything starts or is written."""
    from conftest import worker_cli

    config = tmp_path / "sealing.toml"
    config.write_text(THREAD + f'[[processors.c2]]\ncgroup.cpuset = "{BIG_CPU}-{BIG_CPU + 15}"\n')
    result = worker_cli("daemon", "-c", str(config), check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{config}: processors.c2[0].cgroup.cpuset: names CPUs {BIG_CPU}-{BIG_CPU + 15}, " \
           f"this machine has CPUs {format_cpu_list(HAVE)}. Fix: " in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sealing.toml"]

    # a bad hot config at start: the same, naming that file
    config.write_text(THREAD)
    hot_file = tmp_path / "store" / "t0" / "config.toml"
    hot_file.parent.mkdir(parents=True)
    hot_file.write_text('plan = "snap"\n')
    result = worker_cli("daemon", "-c", str(config), check=False)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert f"{hot_file}: plan: unknown plan" in result.stderr and "did you mean `snapup`?" in result.stderr
    assert sorted(p.name for p in (tmp_path / "store" / "t0").iterdir()) == ["config.toml"]
