"""Metrics end to end: real scrapes of a worker daemon and of `damocles-manager run`, checked with
`promtool`; a real Prometheus scraping the worker and answering a query; the Grafana dashboard's
queries checked against the metric names the scrapes expose.

Prometheus and promtool come from Debian's `prometheus` package (scripts/test.sh installs it);
the tests that need them are skipped, saying so, when they are missing.

The worker is kept idle so these tests cost no CPU: it seals deals only (no CC) and there are no
deals, so its thread allocates one sector and waits in state Allocated. (A worker that accepts no
size its embedded manager seals is refused at start.)
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import STARTUP_BUDGET, free_port, wait_until, write_config
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from damocles_py.cli.manager import main as manager_cli
from damocles_py.config.load import load_config
from damocles_py.daemon import WorkerDaemon
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.interface import AllocateSpec, SectorId, WorkerRef
from damocles_py.metrics.manager import ManagerMetrics

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "damocles-worker.json"
IDLE_SEALING = {"enable_deals": True, "disable_cc": True, "recover_interval": "2s"}
NO_PROMETHEUS = "Debian's prometheus package is not installed (scripts/test.sh installs it: apt-get install prometheus)"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a text-format scrape."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def exposed_names(text: str) -> set[str]:
    """Every metric name a scrape exposes, samples or not: a labelled counter no event has touched
    yet has only its # TYPE line. Histograms expose _bucket, _sum and _count."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {f"{name}_sum", f"{name}_count"} | ({f"{name}_bucket"} if kind == "histogram" else set())
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group())
    return names


def promtool_check_metrics(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(NO_PROMETHEUS)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# one idle worker and one standalone manager for the whole module


@pytest.fixture(scope="module")
def worker_port(tmp_path_factory):
    """The metrics port of a running, idle worker daemon (one sealer thread)."""
    port = free_port()
    config = load_config(write_config(tmp_path_factory.mktemp("worker"), sealing=IDLE_SEALING, metrics_port=port))
    daemon = WorkerDaemon(config)
    daemon.start()
    try:
        wait_until(lambda: 'thread_state="idle"' in scrape(port), timeout=STARTUP_BUDGET, what="an idle thread in the metrics")
        yield port
    finally:
        daemon.stop(timeout=30)


@pytest.fixture(scope="module")
def manager_metrics(tmp_path_factory):
    """(gRPC address, metrics port) of `damocles-manager run --metrics-listen`, after a few calls:
    one sector allocated, one lookup of an unknown sector (NOT_FOUND), one sector list."""
    root = tmp_path_factory.mktemp("manager")
    addr, port = f"127.0.0.1:{free_port()}", free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "damocles_py.cli.manager", "run", "--state-dir", str(root / "state"),
         "--listen", addr, "--metrics-listen", f"127.0.0.1:{port}", "--log-level", "WARNING", "--no-auth"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with RemoteManager(addr, timeout=5.0) as client:
            def ready():
                assert process.poll() is None, process.communicate()
                try:
                    return client.sectors() is not None
                except Exception:  # noqa: BLE001 - not listening yet
                    return False

            wait_until(ready, timeout=STARTUP_BUDGET, what="damocles-manager")
            assert client.allocate_sector(AllocateSpec(), WorkerRef("metrics-test", 0, "/sealing/0")) is not None
            assert client.sector(SectorId(1000, 99)) is None
        yield addr, port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0 and "Traceback" not in stderr, stderr


# ---------------------------------------------------------------------------------------------
# scrapes


def test_worker_scrape_passes_promtool_and_shows_the_idle_thread(worker_port):
    text = scrape(worker_port)
    promtool_check_metrics(text)
    found = samples(text)
    idle = {"thread": "0", "plan": "sealer", "state": "Allocated", "thread_state": "idle"}
    assert found[("damocles_sealing_thread_state", frozenset(idle.items()))] == 1
    assert found[("damocles_worker_info", frozenset({"worker": "test-worker"}.items()))] == 1
    assert found[("damocles_sectors_total", frozenset({"plan": "sealer", "outcome": "finished"}.items()))] == 0
    # the thread asked for its sector: the call is counted and timed
    allocations = {"method": "allocate_sector", "outcome": "ok"}
    assert found[("damocles_manager_rpc_calls_total", frozenset(allocations.items()))] >= 1
    assert found[("damocles_manager_rpc_duration_seconds_count", frozenset({"method": "allocate_sector"}.items()))] >= 1
    assert {"damocles_stage_duration_seconds_bucket", "damocles_failures_total", "damocles_retries_total",
            "damocles_transitions_total"} <= exposed_names(text)


def test_manager_scrape_passes_promtool_and_counts_sectors_and_requests(manager_metrics):
    _, port = manager_metrics
    text = scrape(port)
    promtool_check_metrics(text)
    found = samples(text)

    def value(name, **labels):
        return found.get((name, frozenset(labels.items())))

    assert value("damocles_manager_sectors", state="allocated") == 1
    for state in ("pre_committed", "proven", "finished", "aborted"):
        assert value("damocles_manager_sectors", state=state) == 0
    assert value("damocles_manager_grpc_requests_total", method="AllocateSector", code="OK") == 1
    assert value("damocles_manager_grpc_requests_total", method="GetSector", code="NOT_FOUND") == 1
    assert value("damocles_manager_grpc_requests_total", method="ListSectors", code="OK") >= 1
    assert value("damocles_manager_grpc_request_duration_seconds_count", method="AllocateSector") == 1


def test_manager_workers_gauge_only_when_the_manager_lists_workers():
    class Manager:
        def sectors(self):
            return []

    class ManagerWithWorkers(Manager):
        def workers(self):
            return [{"instance": "a", "alive": True}, {"instance": "b", "alive": False},
                    {"instance": "c", "alive": True}]

    without = generate_latest(ManagerMetrics(Manager()).registry).decode()
    assert "damocles_manager_workers" not in without and 'damocles_manager_sectors{state="allocated"} 0.0' in without
    text = generate_latest(ManagerMetrics(ManagerWithWorkers()).registry).decode()
    assert samples(text)[("damocles_manager_workers", frozenset({"status": "alive"}.items()))] == 2
    assert samples(text)[("damocles_manager_workers", frozenset({"status": "lost"}.items()))] == 1


def test_manager_rejects_a_bad_metrics_address_in_one_line(tmp_path, capsys):
    assert manager_cli(["run", "--state-dir", str(tmp_path / "state"), "--metrics-listen", "9001"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --metrics-listen: '9001' is not a host:port address") and err.count("\n") == 1
    assert not (tmp_path / "state").exists()


# ---------------------------------------------------------------------------------------------
# a real Prometheus


def prometheus_query(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_the_worker_and_answers_a_query(worker_port, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(NO_PROMETHEUS)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: damocles-worker\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{worker_port}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={tmp_path / 'data'}"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def idle_series():
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                result = prometheus_query(port, 'damocles_sealing_thread_state{job="damocles-worker"}')
            except OSError:  # not listening yet
                return None
            return [r for r in result if r["metric"].get("thread_state") == "idle"]

        (series,) = wait_until(idle_series, timeout=2 * STARTUP_BUDGET, what="Prometheus to scrape the idle thread", interval=0.5)
        labels = series["metric"]
        assert (labels["thread"], labels["plan"], labels["state"]) == ("0", "sealer", "Allocated")
        assert labels["instance"] == f"127.0.0.1:{worker_port}"
        assert series["value"][1] == "1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# ---------------------------------------------------------------------------------------------
# the Grafana dashboard


def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel with queries, including those inside collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return panels


def test_dashboard_queries_only_metrics_that_exist(worker_port, manager_metrics, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_names(scrape(worker_port)) | exposed_names(scrape(manager_metrics[1]))

    # importable: Grafana asks for the Prometheus datasource, and panels use it
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"

    panels = dashboard_panels(dashboard)
    exprs = []
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            used = set(re.findall(r"\bdamocles_[a-zA-Z0-9_]+", target["expr"]))
            assert used, f"panel {panel['title']!r}: {target['expr']!r} uses no damocles metric"
            assert used <= exposed, f"panel {panel['title']!r} queries metrics no scrape exposes: {used - exposed}"
            exprs.append(target["expr"])
    variable_query = variables["instance"]["query"]["query"]
    assert set(re.findall(r"\bdamocles_[a-zA-Z0-9_]+", variable_query)) <= exposed

    used = {name for e in exprs for name in re.findall(r"\bdamocles_[a-zA-Z0-9_]+", e)}
    assert {"damocles_sealing_thread_state", "damocles_stage_duration_seconds_bucket", "damocles_failures_total",
            "damocles_retries_total", "damocles_sectors_total", "damocles_manager_rpc_calls_total",
            "damocles_manager_rpc_duration_seconds_bucket", "damocles_manager_sectors"} <= used

    # and each query is valid PromQL once Grafana's variables are filled in
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(NO_PROMETHEUS)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "1m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
