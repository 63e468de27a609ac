"""schemathesis against the served schema, as every kind of caller, then the invariants.

The platform runs for real (gunicorn on the test database and Redis); schemathesis reads
`/api/schema/` from it and runs all its phases (coverage, fuzzing, stateful) with every check
on, once as an anonymous caller, a player, a staff account and a service (the bearer token of
gateways and game servers). Any failure of any class fails the test: a 5xx, an undocumented
status, a response that breaks its schema, valid input refused, invalid input accepted. Then
the money and the game must still add up: the jackpot audit, the gold audit, seats within
capacity and one active seat per player.

Bounded: FUZZ_EXAMPLES cases per operation and caller (default 15) and a time limit per
caller; FUZZ_SEED picks the run (a fixed default so CI is repeatable; any seed must pass).
"""

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count, F, Q
from rest_framework.authtoken.models import Token

from game.models import Combat, Registration
from game.players import register_player
from tests.processes import SERVICE_TOKEN, Platform

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
SEED = os.environ.get("FUZZ_SEED", "20261202")
CALLER_TIMEOUT = 300


def _callers() -> dict[str, str | None]:
    _, player_token = register_player(username="wren", password="storm-crossing-7391")
    staff = get_user_model().objects.create_user(
        "fuzz-staff", password="fuzz-staff-passw0rd", is_staff=True
    )
    return {
        "anonymous": None,
        "player": f"Token {player_token}",
        "staff": f"Token {Token.objects.create(user=staff).key}",
        "service": f"Bearer {SERVICE_TOKEN}",
    }


def _fuzz(platform: Platform, caller: str, authorization: str | None, reports: Path) -> dict:
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"http://127.0.0.1:{platform.web_port}/api/schema/",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-junit-path",
        str(reports / f"{caller}.xml"),
    ]
    if authorization:
        argv += ["--header", f"Authorization: {authorization}"]
    started = time.monotonic()
    run = subprocess.run(  # in the reports folder: schemathesis keeps a cache where it runs
        argv, capture_output=True, text=True, timeout=CALLER_TIMEOUT, cwd=reports
    )
    output = run.stdout + run.stderr
    (reports / f"{caller}.txt").write_text(output)
    cases = re.search(r"(\d+) generated", output)
    operations = re.search(r"Tested: (\d+)", output)
    return {
        "caller": caller,
        "exit": run.returncode,
        "operations": int(operations.group(1)) if operations else 0,
        "cases": int(cases.group(1)) if cases else 0,
        "failures": output.count("Test Case ID:"),
        "seconds": round(time.monotonic() - started, 1),
        "tail": output[-6000:],
    }


def _game_invariants() -> list[str]:
    broken = []
    counted = Combat.objects.annotate(taken=Count("registrations"))
    over = counted.filter(taken__gt=F("capacity"))
    broken += [f"combat {c.pk} has {c.taken} seats of {c.capacity}" for c in over]
    miscounted = counted.exclude(seats=F("taken"))
    broken += [f"combat {c.pk} counts {c.seats} seats for {c.taken} taken" for c in miscounted]
    doubled = (
        Registration.objects.filter(active=True)
        .values("player")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    broken += [f"player {row['player']} has {row['n']} active seats" for row in doubled]
    ended = Registration.objects.filter(active=True).filter(
        ~Q(combat__status__in=[Combat.Status.OPEN, Combat.Status.RUNNING])
    )
    broken += [f"active seat in ended combat {r.combat_id}" for r in ended]
    return broken


def test_the_served_schema_holds_under_fuzzing(tmp_path, capsys):
    call_command("seed_world", verbosity=0)
    call_command("trigger_nightstorm", "ASH1", verbosity=0)  # combats to find and join
    callers = _callers()
    reports = tmp_path / "schemathesis"
    reports.mkdir()
    platform = Platform(tmp_path)
    try:
        platform.web(workers=2)
        results = [_fuzz(platform, name, auth, reports) for name, auth in callers.items()]
    finally:
        platform.stop()

    with capsys.disabled():
        print(f"\nschemathesis (seed {SEED}, {EXAMPLES} examples), reports in {reports}:")
        for r in results:
            print(
                f"  {r['caller']:<9} operations {r['operations']:>3}  cases {r['cases']:>5}  "
                f"failures {r['failures']:>2}  {r['seconds']:>6.1f}s  exit {r['exit']}"
            )
    for r in results:
        assert r["exit"] == 0 and r["failures"] == 0, f"{r['caller']}:\n{r['tail']}"
        assert r["operations"] >= 20 and r["cases"] > 0, r["tail"]
    assert "Traceback" not in platform.log("web"), platform.log("web")[-4000:]

    call_command("jackpot_audit", stdout=io.StringIO(), stderr=io.StringIO())  # raises on a break
    call_command("gold_audit", stdout=io.StringIO())
    assert _game_invariants() == []
