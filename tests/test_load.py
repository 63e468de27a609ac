"""`make load` cannot rot: the load runner (`python -m load`) once, for one small stage, on the
test database and Redis.

It starts every process (gunicorn with deploy/gunicorn.conf.py, qcluster, run_orchestrator,
run_gateway), runs the mixed workload with locust for about 15 s (a few users of every kind:
players storming combats, travelling and betting with replayed keys, a newcomer, the game
server awarding wins, gateway churn), then checks the invariants. Storms are short here
(5 s of registration) so their combats fight and pay out within the test.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.processes import ROOT, database_url

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def test_the_load_runner_runs_one_stage_and_checks_the_invariants(tmp_path):
    env = {
        **os.environ,
        "NIGHTSTORM_REGISTRATION_WINDOW_SECONDS": "5",
        "LOAD_STORM_EVERY": "4",
        "LOAD_PLAYERS": "60",
        "LOAD_WEB_WORKERS": "2",
        "LOAD_WEB_THREADS": "4",
        "LOAD_SETTLE_SECONDS": "20",
    }
    argv = [
        sys.executable,
        "-m",
        "load",
        "--seconds",
        "15",
        "--stages",
        "7",
        "--database-url",
        database_url(),
        "--redis-url",
        settings.REDIS_URL,
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150, check=False
    )
    output = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, output

    (run_dir,) = [p for p in Path(tmp_path).iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    (stage,) = results["stages"]
    assert stage["users"] == 7 and stage["total"]["requests"] > 0, output
    assert stage["server_errors"] == 0 and stage["total"]["failures"] == 0, output
    assert Path(stage["html"]).exists()

    # Every kind of user did its work in the measured window.
    names = {e["name"] for e in stage["endpoints"]}
    for wanted in (
        "GET /nightstorms/",
        "POST /jackpots/contributions/",
        "POST /jackpots/[group]/wins/",
        "POST /auth/register/",
        "gateway login",
    ):
        assert wanted in names, (wanted, sorted(names))

    invariants = {i["name"]: i for i in results["invariants"]}
    for name in (
        "jackpot_audit",
        "gold_audit",
        "combat capacity",
        "one active seat per player",
        "rewards paid once",
        "idempotency keys applied once",
        "gateway connections released",
        "processes",
    ):
        assert invariants[name]["ok"], invariants[name]
    assert all(i["ok"] for i in results["invariants"]), results["invariants"]

    assert "stage  users    req/s   p50   p95   p99" in proc.stdout
    assert "highest passing stage" in proc.stdout
    assert "invariants:" in proc.stdout
