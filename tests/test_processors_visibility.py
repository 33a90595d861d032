"""What an operator sees of external processors: `worker list` (text and --json) and the metrics.

One real daemon, two sealer threads, one PC1 child pinned to core 0, and PC1 starts spaced by an
hour (`limitation.staggered`): the first thread's PC1 runs in the child, the second thread waits
for its pc1 slot. The seed never comes (a pre-commit delay of 10^5 epochs), so no C2 runs: the test
costs a child start and two 2KiB sectors up to PC1/PC2.
"""

from __future__ import annotations

import json
import os
import re
import signal

from conftest import STARTUP_BUDGET, free_port, wait_until, worker_cli, write_config
from test_metrics import promtool_check_metrics, samples, scrape

PROCESSORS = """
[[processors.pc1]]
cgroup.cpuset = "0"
concurrent = 1

[processors.limitation.staggered]
pc1 = "1h"
"""
NO_SEED = {"pre_commit_delay_epochs": 10**5}


def listed(config) -> dict:
    return json.loads(worker_cli("worker", "list", "-c", str(config), "--json").stdout)


def test_worker_list_and_metrics_show_the_children_and_the_stage_waits(tmp_path, daemon_factory):
    port = free_port()
    config = write_config(tmp_path, plans=("sealer", "sealer"), embedded=NO_SEED, metrics_port=port,
                          processors=PROCESSORS)
    daemon = daemon_factory(config, max_sectors=2)

    # one thread's PC1 done in the child, the other waiting for the staggered pc1 slot
    def settled():
        out = listed(config)
        child = out["processors"][0]
        return child["tasks_done"] == 1 and any(t["thread_state"] == "waiting" and t["stage"] == "pc1"
                                                for t in out["threads"]) and out
    out = wait_until(settled, STARTUP_BUDGET, "a PC1 done in the child and a thread waiting for its pc1 slot")
    child = out["processors"][0]
    assert {k: child[k] for k in ("stage", "index", "cpuset", "state", "restarts")} == {
        "stage": "pc1", "index": 0, "cpuset": "0", "state": "running", "restarts": 0}
    pid = child["pid"]
    assert os.sched_getaffinity(pid) == {0}  # the child really is pinned where the list says
    assert {"stage": "pc1", "running": 0, "waiting": 1} in out["stages"]
    waiter = next(t for t in out["threads"] if t["thread_state"] == "waiting")

    # the text form: the wait names its stage and how long it has lasted
    wait_until(lambda: listed(config)["threads"][waiter["index"]]["seconds_waiting"] >= 1, 10, "a 1 s wait")
    text = worker_cli("worker", "list", "-c", str(config)).stdout
    row = next(line for line in text.splitlines() if line.startswith(f"{waiter['index']:>2}  "))
    waited = re.search(r"waiting for pc1 slot +(\d+)m(\d\d)s", row)
    assert waited and int(waited[1]) * 60 + int(waited[2]) >= 1, text
    assert re.search(rf"^pc1\[0\] +{pid} +0 +running +1 +0  -$", text, re.M), text
    assert re.search(r"^pc1 +0 +1$", text, re.M), text

    # the same in the metrics, read at scrape time
    metrics = scrape(port)
    promtool_check_metrics(metrics)
    found = samples(metrics)
    child_labels = {"stage": "pc1", "index": "0"}
    assert found[("damocles_processor_up", frozenset(child_labels.items()))] == 1
    assert found[("damocles_processor_tasks_total", frozenset(child_labels.items()))] == 1
    assert found[("damocles_processor_restarts_total", frozenset(child_labels.items()))] == 0
    info = {**child_labels, "pid": str(pid), "cpuset": "0"}
    assert found[("damocles_processor_info", frozenset(info.items()))] == 1
    assert found[("damocles_stage_tasks", frozenset({"stage": "pc1", "state": "waiting"}.items()))] == 1
    assert found[("damocles_stage_tasks", frozenset({"stage": "c2", "state": "running"}.items()))] == 0

    # a child killed (a real SIGKILL) is started again: a new pid, one restart, in both views
    os.kill(pid, signal.SIGKILL)

    def restarted():
        child = listed(config)["processors"][0]
        return child["restarts"] == 1 and child["state"] == "running" and child
    child = wait_until(restarted, STARTUP_BUDGET, "the pc1 child to be started again")
    assert child["pid"] not in (0, pid) and os.sched_getaffinity(child["pid"]) == {0}
    found = samples(scrape(port))
    assert found[("damocles_processor_restarts_total", frozenset(child_labels.items()))] == 1
    assert found[("damocles_processor_info", frozenset({**info, "pid": str(child["pid"])}.items()))] == 1
    assert daemon.processors.info()[0].pid == child["pid"]


def test_worker_list_without_processors_shows_no_processor_table(tmp_path, daemon_factory):
    config = write_config(tmp_path, sealing={"enable_deals": True, "disable_cc": True, "recover_interval": "2s"})
    daemon_factory(config)
    wait_until(lambda: listed(config)["threads"][0]["state"] == "Allocated", STARTUP_BUDGET, "an idle thread")
    out = listed(config)
    assert out["processors"] == [] and out["stages"] == []
    text = worker_cli("worker", "list", "-c", str(config)).stdout
    assert "processor" not in text and not re.search(r"^stage +running +waiting$", text, re.M), text
