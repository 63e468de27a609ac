"""Configuration edits under live betting (real threads, real PostgreSQL).

8 threads bet through `services.contribute` without pause while a game master PATCHes a pool
over the API. Before each PATCH the game master waits until a bet has committed since their
GET, so every PATCH really races the betting. The ETag names the configuration version, so a
PATCH with a fresh ETag goes through every time, and one whose ETag predates another
configuration edit is 412. The CONTROL runs the same load against the old rule (If-Match
compared with the balance, written here in the test): it is refused.
"""

import itertools
import threading
import time
import uuid

import pytest
from django.db import connections, transaction
from django.db.models import Max
from rest_framework.test import APIClient

from jackpot import services
from jackpot.models import Contribution, JackpotPool, LedgerEntry
from nightstorm.errors import Busy, PreconditionFailed
from tests.jackpot.books import assert_books_balance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

URL = "/api/v1/jackpots/minor/"
BETTORS = 8
EDITS = 5


class Betting:
    """BETTORS threads contributing until `stop()`; counts what each call did."""

    def __init__(self, players):
        self.player_ids = [p.pk for p in players]
        self.done = threading.Event()
        self.applied = 0
        self.errors = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._bet, args=(n,)) for n in range(BETTORS)]

    def _bet(self, n):
        try:
            for i in itertools.count():
                if self.done.is_set():
                    return
                try:
                    services.contribute(
                        player=self.player_ids[n % len(self.player_ids)],
                        bet=10_000 + i,
                        operation_id=f"live-{n}-{i}",
                    )
                except Busy:  # gave up after every retry: applied nothing
                    continue
                with self._lock:
                    self.applied += 1
        except Exception as exc:  # reported by stop()
            self.errors.append(exc)
        finally:
            connections.close_all()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not self.errors, self.errors
        return False


def last_bet() -> int:
    return Contribution.objects.aggregate(m=Max("id", default=0))["m"]


def wait_for_a_bet(after: int, timeout: float = 10.0) -> None:
    """Until a bet newer than contribution `after` committed."""
    deadline = time.monotonic() + timeout
    while not Contribution.objects.filter(id__gt=after).exists():
        assert time.monotonic() < deadline, "no bet committed while waiting"
        time.sleep(0.002)


def staff_api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def old_rule_update_config(*, group: str, changes: dict, expected_version: int):
    """The rule before `config_version`: If-Match named the balance, which every bet moves.
    Same locks, same write; only the comparison differs."""
    with transaction.atomic():
        pools = list(
            JackpotPool.objects.select_for_update(of=("self",), no_key=True).order_by("pk")
        )
        pool = next(p for p in pools if p.group == group)
        if pool.amount != expected_version:
            raise PreconditionFailed()
        return services.update_config(
            group=group, changes=changes, expected_version=pool.config_version
        )


def test_patches_with_a_fresh_etag_succeed_while_bets_flow(pools, players, staff_user):
    api = staff_api(staff_user)
    statuses, rates = [], itertools.cycle([120, 80])
    with Betting(players) as betting:
        for _ in range(EDITS):
            seen = api.get(URL)
            wait_for_a_bet(last_bet())  # the balance moved since the GET
            rate = next(rates)
            response = api.patch(
                URL, {"contribution_rate_bp": rate}, format="json", HTTP_IF_MATCH=seen["ETag"]
            )
            statuses.append(response.status_code)
            assert response.status_code == 200, response.json()
            assert response.json()["contribution_rate_bp"] == rate
            assert response["ETag"] == f'"{seen.json()["config_version"] + 1}"'
    assert statuses == [200] * EDITS
    assert betting.applied >= EDITS
    pool = JackpotPool.objects.get(group="minor")
    assert pool.config_version == pools["minor"].config_version + EDITS
    assert_books_balance()


def test_control_if_match_on_the_balance_version_is_refused_while_bets_flow(
    pools, players, staff_user
):
    """CONTROL: the same load against the old rule: the game master's edit is refused."""
    api = staff_api(staff_user)
    outcomes, rates = [], itertools.cycle([120, 80])
    with Betting(players):
        for _ in range(EDITS):
            seen = api.get(URL).json()["amount"]  # what the old rule compared
            wait_for_a_bet(last_bet())
            try:
                old_rule_update_config(
                    group="minor",
                    changes={"contribution_rate_bp": next(rates)},
                    expected_version=seen,
                )
                outcomes.append("applied")
            except PreconditionFailed:
                outcomes.append("refused")
    assert "refused" in outcomes, outcomes
    assert_books_balance()


def test_a_patch_whose_etag_predates_another_edit_is_412_under_betting(pools, players, staff_user):
    alice, bob = staff_api(staff_user), staff_api(staff_user)
    seed = pools["minor"].seed_amount
    with Betting(players):
        for round_ in range(3):
            alice_etag = alice.get(URL)["ETag"]
            bob_seen = bob.get(URL)
            bob_rate = 90 + round_
            first = bob.patch(
                URL,
                {"contribution_rate_bp": bob_rate},
                format="json",
                HTTP_IF_MATCH=bob_seen["ETag"],
            )
            assert first.status_code == 200, first.json()
            wait_for_a_bet(last_bet())
            stale = alice.patch(
                URL, {"seed_amount": 2_000 + round_}, format="json", HTTP_IF_MATCH=alice_etag
            )
            assert stale.status_code == 412 and stale.json()["code"] == "version_conflict"
            pool = JackpotPool.objects.get(group="minor")
            # Bob's edit stands, Alice's stale one changed nothing.
            assert (pool.contribution_rate_bp, pool.seed_amount) == (bob_rate, seed)
            # Alice reloads and makes her edit on top of Bob's.
            fresh = alice.get(URL)
            assert fresh.json()["contribution_rate_bp"] == bob_rate
            retry = alice.patch(
                URL, {"seed_amount": 2_000 + round_}, format="json", HTTP_IF_MATCH=fresh["ETag"]
            )
            assert retry.status_code == 200, retry.json()
            seed = 2_000 + round_
    pool = JackpotPool.objects.get(group="minor")
    assert (pool.seed_amount, pool.contribution_rate_bp) == (2_002, 92)
    assert pool.config_version == pools["minor"].config_version + 6
    assert_books_balance()


def test_admin_saves_go_through_under_betting_and_stale_ones_do_not(
    client, settings, uncapped_pools, players, staff_user
):
    """The admin's change form: a save over live bets succeeds; over another edit it fails.
    (Uncapped pools: a pool filled to its cap by the bets would refuse the adjustment.)"""
    settings.SESSION_COOKIE_SECURE = False
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    url = f"/admin/jackpot/jackpotpool/{uncapped_pools['minor'].pk}/change/"

    def form(pool, **changes):
        data = {
            "seed_amount": pool.seed_amount,
            "contribution_rate_bp": pool.contribution_rate_bp,
            "max_amount": "",
            "adjustment": "",
            "adjustment_note": "",
            "adjustment_token": uuid.uuid4().hex,
            "expected_version": pool.config_version,
        }
        data.update(changes)
        return data

    with Betting(players):
        for n in range(3):
            opened = JackpotPool.objects.get(group="minor")
            wait_for_a_bet(last_bet())
            response = client.post(url, form(opened, contribution_rate_bp=110 + n, adjustment=5))
            assert response.status_code == 302, response.content.decode()[:2000]
        opened = JackpotPool.objects.get(group="minor")
        services.update_config(
            group="minor", changes={"seed_amount": 1_234}, expected_version=opened.config_version
        )
        response = client.post(url, form(opened, contribution_rate_bp=150, adjustment=5))
        assert response.status_code == 200
        assert "changed this pool&#x27;s configuration" in response.content.decode()
    pool = JackpotPool.objects.get(group="minor")
    assert (pool.contribution_rate_bp, pool.seed_amount) == (112, 1_234)
    assert pool.config_version == uncapped_pools["minor"].config_version + 4
    assert LedgerEntry.objects.filter(pool=pool, kind="adjustment").count() == 3
    assert_books_balance()
