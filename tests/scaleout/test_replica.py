"""The API on a PostgreSQL primary and a streaming replica (`DATABASE_REPLICA_URL`).

gunicorn runs on both through `nightstorm.routers`; the replica's replay is paused to make its
lag as long as a test needs. Clients are told apart by `X-Forwarded-For`, as behind a proxy.
"""

import time
import uuid

import pytest

from tests.processes import Platform

pytestmark = [pytest.mark.scaleout, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

PASSWORD = "replica-test-Passw0rd!"
WINDOW = 1  # NIGHTSTORM_READ_YOUR_WRITES_SECONDS for this server
# A pool's amount is the sum of its stripes.
POOL_AMOUNTS = (
    'SELECT p."group", coalesce(sum(s.amount), 0) FROM jackpot_pool p '
    'LEFT JOIN jackpot_stripe s ON s.pool_id = p.id GROUP BY p."group"'
)


@pytest.fixture(scope="module")
def web(pg_replica, tmp_path_factory):
    platform = Platform(
        tmp_path_factory.mktemp("replica-web"),
        DATABASE_URL=pg_replica.primary_url,
        DATABASE_REPLICA_URL=pg_replica.replica_url,
        NIGHTSTORM_READ_YOUR_WRITES_SECONDS=WINDOW,
    )
    try:
        assert platform.manage("migrate", "migrate", "--noinput").wait(120) == 0, platform.log(
            "migrate"
        )
        pg_replica.wait_for_replica()
        platform.web(workers=2)
        yield platform
    finally:
        platform.stop()


def call(web, method, path, body=None, *, client, token=None, **headers):
    return web.request(method, path, body, token=token, **{"X-Forwarded-For": client}, **headers)


def register(web, name: str, client: str) -> str:
    status, body, _ = call(
        web,
        "POST",
        "/api/v1/auth/register/",
        {"username": name, "password": PASSWORD},
        client=client,
    )
    assert status == 201, body
    return body["token"]


def pools(web, *, client, token=None) -> dict[str, int]:
    status, body, _ = call(web, "GET", "/api/v1/jackpots/", client=client, token=token)
    assert status == 200, body
    rows = body["results"] if isinstance(body, dict) else body
    return {row["group"]: row["amount"] for row in rows}


def contribute(web, token: str, bet: int, *, client) -> int:
    status, _, _ = call(
        web,
        "POST",
        "/api/v1/jackpots/contributions/",
        {"bet": bet},
        client=client,
        token=token,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    return status


def test_a_client_reads_its_own_writes_while_the_replica_lags(web, pg_replica):
    settled = register(web, "settled", "10.0.1.2")
    pg_replica.wait_for_replica()
    time.sleep(WINDOW + 0.2)
    before = pools(web, client="10.0.1.2")
    pg_replica.pause_replay()
    try:
        # A new account exists only on the primary; its owner still reads it at once.
        token = register(web, "newcomer", "10.0.1.1")
        assert pg_replica.on_replica("SELECT 1 FROM auth_user WHERE username = 'newcomer'") == []
        status, me, _ = call(web, "GET", "/api/v1/players/me/", client="10.0.1.1", token=token)
        assert status == 200 and me["name"] == "newcomer"

        assert contribute(web, token, 10_000, client="10.0.1.1") == 201
        fresh = dict(pg_replica.on_primary(POOL_AMOUNTS))
        assert fresh != before
        assert pools(web, client="10.0.1.1", token=token) == fresh  # its own write
        # Another client, idle for longer than the window, is served by the lagging replica.
        assert pools(web, client="10.0.1.2", token=settled) == before
        time.sleep(WINDOW + 0.5)
        _, health, _ = call(web, "GET", "/health/", client="10.0.1.9")
        assert health["checks"]["database_replica"]["state"] == "degraded"
    finally:
        pg_replica.resume_replay()
    pg_replica.wait_for_replica()
    assert pools(web, client="10.0.1.2", token=settled) == fresh
    _, health, _ = call(web, "GET", "/health/", client="10.0.1.9")
    assert health["checks"]["database_replica"]["state"] == "ok"


def test_replica_lag_never_breaks_an_invariant(web, pg_replica):
    """Clients that read stale pools and a stale configuration from the replica still write
    correctly: every bet lands once, and a stale If-Match is refused, not applied."""
    players = {f"10.0.2.{i}": register(web, f"bettor{i}", f"10.0.2.{i}") for i in range(1, 4)}
    editors = {f"10.0.3.{i}": register(web, f"editor{i}", f"10.0.3.{i}") for i in (1, 2)}
    pg_replica.on_primary(
        "UPDATE auth_user SET is_staff = true WHERE username IN ('editor1', 'editor2')"
    )
    pg_replica.wait_for_replica()
    time.sleep(WINDOW + 0.2)
    total_before = sum(amount for _, amount in pg_replica.on_primary(POOL_AMOUNTS))
    status, pool, headers = call(
        web, "GET", "/api/v1/jackpots/minor/", client="10.0.3.2", token=editors["10.0.3.2"]
    )
    assert status == 200
    stale_etag = headers["ETag"]

    pg_replica.pause_replay()
    try:
        statuses = []
        for _ in range(3):
            for client, token in players.items():
                pools(web, client=client, token=token)
                statuses.append(contribute(web, token, 1_000, client=client))
        assert statuses == [201] * len(statuses)

        # editor1 changes the configuration; editor2 still reads the old one off the replica.
        status, _, _ = call(
            web,
            "PATCH",
            "/api/v1/jackpots/minor/",
            {"contribution_rate_bp": pool["contribution_rate_bp"] + 1},
            client="10.0.3.1",
            token=editors["10.0.3.1"],
            **{"If-Match": stale_etag},
        )
        assert status == 200
        status, _, headers = call(
            web, "GET", "/api/v1/jackpots/minor/", client="10.0.3.2", token=editors["10.0.3.2"]
        )
        assert headers["ETag"] == stale_etag  # the replica has not seen the edit
        status, body, _ = call(
            web,
            "PATCH",
            "/api/v1/jackpots/minor/",
            {"contribution_rate_bp": 1},
            client="10.0.3.2",
            token=editors["10.0.3.2"],
            **{"If-Match": headers["ETag"]},
        )
        assert status == 412, body
    finally:
        pg_replica.resume_replay()

    total_after = sum(amount for _, amount in pg_replica.on_primary(POOL_AMOUNTS))
    (bets,) = pg_replica.on_primary(
        "SELECT count(*) FROM jackpot_contribution c JOIN game_player p ON p.id = c.player_id "
        "WHERE p.name LIKE 'bettor%%'"
    )[0]
    assert bets == 9  # each bet applied once, none lost to a stale read
    assert total_after > total_before
    audit = web.manage("audit", "jackpot_audit")
    assert audit.wait(60) == 0, web.log("audit")
    (rate,) = pg_replica.on_primary(
        "SELECT contribution_rate_bp FROM jackpot_pool WHERE \"group\" = 'minor'"
    )[0]
    assert rate == pool["contribution_rate_bp"] + 1
