"""Structured logs: a request id on every line of a request, each state change's operation id,
player and outcome, audit events for jackpot wins, adjustments and configuration changes, the
JSON and plain formats, and the seed's JACKPOT_LOG_LEVEL and JACKPOT_ENABLE_METRICS."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightstorm.logs import ContextFilter, PlainFormatter, json_formatter

ROOT = Path(__file__).resolve().parents[2]


class Captured(logging.Handler):
    """Records formatted as production does (JSON, with the context filter)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(json_formatter())
        self.addFilter(ContextFilter())
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def captured():
    handler = Captured()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.lines
    root.removeHandler(handler)


def test_a_request_gets_an_id_that_its_log_lines_and_response_carry(client, captured, db):
    response = client.get("/api/v1/zones/")
    rid = response["X-Request-ID"]
    assert len(rid) == 32
    (line,) = [r for r in captured if r["logger"] == "nightstorm.request"]
    assert line["request_id"] == rid and line["status"] == 200 and line["path"] == "/api/v1/zones/"


def test_a_callers_request_id_is_kept_and_a_strange_one_replaced(client, db):
    assert client.get("/health/live/", HTTP_X_REQUEST_ID="edge-1234abcd")["X-Request-ID"] == (
        "edge-1234abcd"
    )
    replaced = client.get("/health/live/", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"]
    assert replaced != "bad id\n" and len(replaced) == 32


@pytest.fixture
def jackpot_debug():
    logger = logging.getLogger("jackpot")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


@pytest.mark.django_db
def test_a_state_change_logs_its_operation_id_player_and_outcome(captured, jackpot_debug):
    from jackpot import services
    from tests.jackpot.factories import PlayerFactory

    services.ensure_default_pools()
    player = PlayerFactory()
    services.contribute(player=player, bet=1000, operation_id="op-logged")
    (line,) = [r for r in captured if r["logger"] == "jackpot.operations"]
    assert line["level"] == "DEBUG"  # the ledger keeps every contribution; see the next test
    assert line["operation"] == "jackpot.contribute"
    assert line["operation_id"] == "op-logged"
    assert line["player"] == str(player.pk)
    assert line["outcome"] == "ok"
    assert line["duration_ms"] >= 0


@pytest.mark.django_db
def test_a_contribution_is_quiet_at_info_and_its_refusal_is_not(captured):
    from jackpot import services
    from jackpot.errors import OperationReused
    from tests.jackpot.factories import PlayerFactory

    services.ensure_default_pools()
    player = PlayerFactory()
    services.contribute(player=player, bet=1000, operation_id="op-quiet")
    assert not [r for r in captured if r["logger"] == "jackpot.operations"]
    with pytest.raises(OperationReused):
        services.contribute(player=player, bet=2000, operation_id="op-quiet")
    (line,) = [r for r in captured if r["logger"] == "jackpot.operations"]
    assert (line["level"], line["outcome"]) == ("INFO", "operation_id_reused")


@pytest.mark.django_db
def test_a_journey_and_a_seat_are_quiet_at_info(captured):
    from game import registration, travel
    from tests.game.factories import make_event, make_players, make_zones

    home, away = make_zones(2)
    traveller, fighter = make_players(2, zone=home)
    combat = make_event(home).combats.order_by("index").first()
    actions = ("game.travel", "game.register")
    travel.start_travel(player_id=traveller.pk, zone_code=away.code)
    registration.register(player_id=fighter.pk, combat_id=combat.pk)
    assert not [r for r in captured if r.get("operation") in actions]
    with pytest.raises(registration.AlreadyRegistered):
        registration.register(player_id=fighter.pk, combat_id=combat.pk)
    (line,) = [r for r in captured if r.get("operation") in actions]
    assert (line["level"], line["outcome"]) == ("INFO", "already_registered")


@pytest.mark.django_db
def test_a_refusal_is_logged_with_its_code(captured):
    from game.errors import UnknownZone
    from game.travel import start_travel
    from tests.jackpot.factories import PlayerFactory

    player = PlayerFactory()
    with pytest.raises(UnknownZone):
        start_travel(player_id=player.pk, zone_code="nowhere")
    (line,) = [r for r in captured if r["logger"] == "game.operations"]
    assert (line["operation"], line["outcome"], line["player"]) == (
        "game.travel",
        "unknown_zone",
        str(player.pk),
    )
    assert line["operation_id"]  # a new one: travel has no key of its own


@pytest.mark.django_db
def test_wins_adjustments_and_config_changes_are_audit_events(
    captured, django_capture_on_commit_callbacks
):
    from jackpot import services
    from tests.jackpot.factories import PlayerFactory

    pools = {p.group: p for p in services.ensure_default_pools()}
    player = PlayerFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.process_win(group="minor", player=player, operation_id="op-win")
        services.adjust_pool(group="major", delta=500, operation_id="op-adjust", note="refund")
        services.update_config(
            group="mega",
            changes={"contribution_rate_bp": 20},
            expected_version=pools["mega"].config_version,
            actor="gm",
        )
    audit = {r["event"]: r for r in captured if r["logger"] == "nightstorm.audit"}
    assert set(audit) == {"jackpot.win", "jackpot.adjustment", "jackpot.config"}
    win = audit["jackpot.win"]
    assert (win["operation_id"], win["player"], win["group"]) == (
        "op-win",
        str(player.pk),
        "minor",
    )
    assert win["amount"] == pools["minor"].amount
    assert audit["jackpot.adjustment"]["delta"] == 500
    assert audit["jackpot.config"]["changes"] == {"contribution_rate_bp": 20}


@pytest.mark.django_db
def test_a_change_rolled_back_is_not_audited(captured, django_capture_on_commit_callbacks):
    from django.db import transaction

    from jackpot import services
    from tests.jackpot.factories import PlayerFactory

    services.ensure_default_pools()
    player = PlayerFactory()
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.process_win(group="minor", player=player, operation_id="op-undone")
        raise RuntimeError("the enclosing request failed")
    assert not [r for r in captured if r["logger"] == "nightstorm.audit"]


def test_plain_format_is_readable_with_the_fields_after_the_message():
    record = logging.makeLogRecord(
        {"name": "jackpot.operations", "levelname": "INFO", "msg": "jackpot.win: ok"}
    )
    record.outcome, record.player = "ok", "p-1"
    ContextFilter().filter(record)
    line = PlainFormatter().format(record)
    assert "INFO jackpot.operations [-] jackpot.win: ok" in line
    assert line.endswith("outcome=ok player=p-1")


def _settings_of(code: str, **env_vars) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "SECRET_KEY": "logs-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SETTINGS_MODULE": "nightstorm.settings",
        **env_vars,
    }
    script = f"import django\ndjango.setup()\n{code}"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_jackpot_log_level_quiets_the_jackpot_app_but_not_its_audit():
    result = _settings_of(
        "import logging\n"
        "print(logging.getLogger('jackpot.operations').getEffectiveLevel())\n"
        "print(logging.getLogger('nightstorm.audit').getEffectiveLevel())",
        JACKPOT_LOG_LEVEL="warning",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(logging.WARNING), str(logging.INFO)]


def test_a_bad_log_level_names_its_variable():
    result = _settings_of("", JACKPOT_LOG_LEVEL="loud")
    assert result.returncode != 0 and "JACKPOT_LOG_LEVEL" in result.stderr


def test_jackpot_metrics_can_be_switched_off():
    code = (
        "from prometheus_client import REGISTRY, generate_latest\n"
        "from jackpot import metrics\n"
        "metrics.OPERATIONS.labels('win', 'applied').inc()\n"
        "metrics.CONFLICTS.labels('contribute').inc()\n"
        "print('jackpot_operations_total' in generate_latest(REGISTRY).decode())"
    )
    assert _settings_of(code, JACKPOT_ENABLE_METRICS="false").stdout.strip() == "False"
    assert _settings_of(code).stdout.strip() == "True"


def test_production_logs_are_json_and_make_run_logs_are_plain():
    code = "import logging\nlogging.getLogger('x').warning('hello', extra={'k': 1})"
    line = _settings_of(code).stderr.strip().splitlines()[-1]
    assert json.loads(line)["message"] == "hello" and json.loads(line)["k"] == 1
    line = _settings_of(code, DEBUG="1").stderr.strip().splitlines()[-1]
    assert line.endswith("WARNING x [-] hello k=1")
