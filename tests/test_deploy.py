"""The monitoring that ships in deploy/: the alert rules pass their promtool unit tests, and the
Grafana dashboard and the alerts query only metrics that `/metrics` really serves."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "nightstorm.json"
OUR_METRIC = re.compile(r"\b(?:nightstorm|jackpot|django)_[a-z0-9_]+\b")


def promtool() -> str:
    """promtool from Debian's `prometheus` package, installed here when missing and root."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("promtool is missing and apt-get cannot install it (needs root on Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("promtool") or pytest.fail("prometheus installed without promtool")


def test_alert_rules_are_valid_and_pass_their_unit_tests():
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test():
    rules = set(re.findall(r"^\s+- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert rules and rules <= tested, rules - tested


def served_names(text: str) -> set[str]:
    """Every sample name the exposition can carry, from its `# TYPE` lines (so a labelled
    metric no request has touched yet counts too)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "summary":
            names |= {name, f"{name}_count", f"{name}_sum"}
        else:
            names.add(name)
    return names


@pytest.fixture
def metrics_text(client, db):
    from django.core.cache import cache

    # A request, a query and a cache read so django-prometheus has declared its families;
    # the process roles' modules, whose metrics the multiprocess directory would bring in.
    import connections.gateway.server  # noqa: F401
    import game.storms.orchestrator  # noqa: F401

    client.get("/api/v1/zones/")
    cache.get("probe")
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels
    return [t["expr"] for p in panels for t in p["targets"]]


def test_the_dashboard_parses_and_queries_only_served_metrics(metrics_text):
    queried = {m for expr in dashboard_queries() for m in OUR_METRIC.findall(expr)}
    missing = queried - served_names(metrics_text)
    assert queried and not missing, missing


def test_the_alerts_query_only_served_metrics(metrics_text):
    text = (PROMETHEUS / "alerts.yml").read_text()
    exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", text)
    queried = {m for expr in exprs for m in OUR_METRIC.findall(expr)}
    missing = queried - served_names(metrics_text)
    assert queried and not missing, missing


def test_the_dashboard_covers_every_alerted_signal():
    alerted = set(OUR_METRIC.findall((PROMETHEUS / "alerts.yml").read_text()))
    shown = {m for expr in dashboard_queries() for m in OUR_METRIC.findall(expr)}
    assert alerted <= shown, alerted - shown
