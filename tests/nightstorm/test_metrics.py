"""`/metrics`: request, database and cache metrics beside the domain ones; operations counted
by `@operation`; replays counted; the multiprocess directory aggregates every process and
forgets the per-process gauges of dead ones (a SIGKILLed process, a gunicorn worker)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from nightstorm.metrics_export import sweep_dead_processes
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def scrape(client) -> dict[str, list]:
    """Metric family name -> its samples, from `/metrics`."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(response.content.decode())
    }


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
def test_request_database_and_cache_metrics_sit_beside_the_domain_ones(client):
    from django.core.cache import cache

    client.get("/api/v1/zones/")
    cache.get("metrics-probe")
    families = scrape(client)
    for name in (
        "django_http_requests_latency_seconds_by_view_method",
        "django_http_responses_total_by_status_view_method",
        "django_db_execute",  # django_db_execute_total's family
        "django_db_query_duration_seconds",
        "django_cache_get",
        "nightstorm_conflicts",
        "nightstorm_operations",
        "nightstorm_operation_seconds",
        "nightstorm_redis_up",
        "nightstorm_database_latency_seconds",
        "jackpot_operations",
    ):
        assert name in families, name


@pytest.mark.django_db
def test_a_service_call_is_counted_and_timed_by_its_outcome():
    from game.errors import UnknownZone
    from game.travel import start_travel
    from tests.jackpot.factories import PlayerFactory

    player = PlayerFactory()
    before = sample("nightstorm_operations_total", operation="game.travel", outcome="unknown_zone")
    timed = sample("nightstorm_operation_seconds_count", operation="game.travel")
    with pytest.raises(UnknownZone):
        start_travel(player_id=player.pk, zone_code="nowhere")
    after = sample("nightstorm_operations_total", operation="game.travel", outcome="unknown_zone")
    assert after == before + 1
    assert sample("nightstorm_operation_seconds_count", operation="game.travel") == timed + 1


@pytest.mark.django_db
def test_a_replayed_contribution_is_counted(api_client):
    from jackpot import services
    from tests.jackpot.factories import PlayerFactory

    services.ensure_default_pools()
    player = PlayerFactory()
    api_client.force_authenticate(player.user)
    replays = sample("nightstorm_idempotent_replays_total")
    jackpot_replays = sample(
        "nightstorm_operations_total", operation="jackpot.contribute", outcome="replayed"
    )
    for _ in range(2):
        response = api_client.post(
            "/api/v1/jackpots/contributions/",
            {"bet": 1000},
            format="json",
            HTTP_IDEMPOTENCY_KEY="replayed-key",
        )
        assert response.status_code == 201
    assert response["Idempotent-Replayed"] == "true"
    assert sample("nightstorm_idempotent_replays_total") == replays + 1
    # The service's own replay (same operation id) is an outcome of the operation.
    services.contribute(player=player, bet=1000, operation_id="op-replayed-twice")
    services.contribute(player=player, bet=1000, operation_id="op-replayed-twice")
    assert (
        sample("nightstorm_operations_total", operation="jackpot.contribute", outcome="replayed")
        == jackpot_replays + 1
    )


@pytest.mark.django_db
def test_health_refreshes_the_dependency_gauges(client):
    from nightstorm import metrics

    metrics.DATABASE_UP.set(0)
    metrics.DATABASE_LATENCY.set(-1)
    client.get("/health/")
    assert sample("nightstorm_database_up") == 1
    assert sample("nightstorm_database_latency_seconds") >= 0


@pytest.mark.redis
@pytest.mark.django_db
def test_health_refreshes_the_redis_gauges(client):
    from nightstorm import metrics

    metrics.REDIS_UP.set(0)
    client.get("/health/ready/")
    assert sample("nightstorm_redis_up") == 1
    assert 0 <= sample("nightstorm_redis_latency_seconds") < 1


# --- several processes, one directory ----------------------------------------------------------

CHILD = """
import os, sys, time
import django
django.setup()
from connections import metrics
metrics.GATEWAY_CLIENTS.set(int(sys.argv[1]))
metrics.GATEWAY_DROPPED.labels("idle").inc(int(sys.argv[1]))
print("ready", flush=True)
time.sleep(120)
"""


def _child(tmp_path, clients: int) -> subprocess.Popen:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(clients)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _aggregate(path) -> dict[str, float]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


CLIENTS = "nightstorm_gateway_clients[]"
DROPPED = "nightstorm_gateway_dropped_total[('reason', 'idle')]"


@pytest.mark.slow
def test_metrics_aggregate_processes_and_forget_a_killed_ones_gauges(tmp_path, monkeypatch, db):
    from django.test import Client

    first, second = _child(tmp_path, 3), _child(tmp_path, 4)
    try:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        families = scrape(Client())
        clients = {s.name: s.value for s in families["nightstorm_gateway_clients"]}
        assert clients == {"nightstorm_gateway_clients": 7}  # livesum over live processes
        second.send_signal(signal.SIGKILL)
        second.wait()
        families = scrape(Client())
        assert [s.value for s in families["nightstorm_gateway_clients"]] == [3]
        # A dead process's counters stay in the totals.
        dropped = [s for s in families["nightstorm_gateway_dropped"] if s.name.endswith("_total")]
        assert [s.value for s in dropped] == [7]
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_control_without_the_sweep_a_killed_process_keeps_its_gauge(tmp_path, monkeypatch):
    """The naive directory reader: the killed process's gateway clients are still counted."""
    first, second = _child(tmp_path, 3), _child(tmp_path, 4)
    try:
        second.send_signal(signal.SIGKILL)
        second.wait()
        assert _aggregate(tmp_path)[CLIENTS] == 7  # wrong: the dead gateway's 4 clients remain
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        assert sweep_dead_processes() == [second.pid]
        assert _aggregate(tmp_path)[CLIENTS] == 3
        assert _aggregate(tmp_path)[DROPPED] == 7
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def _gunicorn(tmp_path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return subprocess.Popen(
        [str(gunicorn), "-c", "deploy/gunicorn.conf.py", "nightstorm.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=open(tmp_path / "web.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _get(port: int, path: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _live_pids(directory: Path) -> set[int]:
    return {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("gauge_live*_*.db")}


@pytest.mark.slow
def test_gunicorn_child_exit_forgets_a_killed_workers_gauges(tmp_path):
    port = free_port()
    web = _gunicorn(tmp_path, port)
    directory = tmp_path / "metrics"
    try:
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while time.monotonic() < deadline and len(pids) < 2:
            try:
                status, _ = _get(port, "/health/")  # each worker that answers sets its gauges
                assert status in (200, 503)
            except OSError:
                time.sleep(0.2)
            pids = _live_pids(directory) if directory.exists() else set()
        assert len(pids) == 2, (tmp_path / "web.log").read_text()
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and victim in _live_pids(directory):
            time.sleep(0.1)
        assert victim not in _live_pids(directory)  # gunicorn's child_exit marked it dead
        status, body = _get(port, "/metrics")
        assert status == 200 and "django_http_requests_total_by_method_total" in body
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
    # gunicorn's own lines are JSON too (the production format).
    boot = [line for line in (tmp_path / "web.log").read_text().splitlines() if "Booting" in line]
    assert boot and all(json.loads(line)["logger"] == "gunicorn.error" for line in boot)


def _port_metrics(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def _wait_for(fetch, ready, timeout: float = 60):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = fetch()
            if ready(last):
                return last
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready: {last}")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_orchestrator_and_gateway_serve_their_metrics_on_a_port(tmp_path, redis_client):
    """NIGHTSTORM_METRICS_PORT (the orchestrator) or --metrics-port (the gateway): each
    process's own registry, with the Redis and database gauges it refreshes itself."""
    from tests.processes import Platform

    platform = Platform(tmp_path, NIGHTSTORM_COMBAT_TICK_SECONDS=1)
    orchestrator_port, gateway_port, gateway_metrics = free_port(), free_port(), free_port()
    try:
        platform.env["NIGHTSTORM_METRICS_PORT"] = str(orchestrator_port)
        platform.manage("orchestrator", "run_orchestrator", "--no-progress")
        del platform.env["NIGHTSTORM_METRICS_PORT"]
        platform.manage(
            "gateway",
            "run_gateway",
            "--port",
            str(gateway_port),
            "--metrics-port",
            str(gateway_metrics),
        )
        seen = _wait_for(
            lambda: _port_metrics(orchestrator_port),
            lambda m: m.get("nightstorm_orchestrator_last_beat_timestamp_seconds", 0) > 0,
        )
        assert seen["nightstorm_redis_up"] == 1 and seen["nightstorm_database_up"] == 1
        assert seen["nightstorm_game_tick_seconds_count"] >= 1
        seen = _wait_for(
            lambda: _port_metrics(gateway_metrics),
            lambda m: m.get("nightstorm_redis_up") == 1 and m.get("nightstorm_database_up") == 1,
        )
        assert "nightstorm_gateway_clients" in seen
    finally:
        codes = platform.stop()
    assert codes == {"orchestrator": 0, "gateway": 0}, platform.log("gateway")[-2000:]


def test_gunicorns_master_imports_the_multiprocess_module_when_it_starts(tmp_path):
    # child_exit runs in the master's SIGCHLD handler; a first import there, interrupted by the
    # next worker's exit at shutdown, left the module half initialised and the master exited 1.
    script = f"""
import runpy, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})

class Server:
    class log:
        info = staticmethod(lambda *args: None)

conf = runpy.run_path("deploy/gunicorn.conf.py")
assert "prometheus_client.multiprocess" not in sys.modules, "imported before the master starts"
conf["on_starting"](Server)
assert "prometheus_client.multiprocess" in sys.modules
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
