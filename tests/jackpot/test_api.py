"""The jackpot API: happy paths and every refusal (4xx JSON with a code, nothing changed)."""

import uuid

import pytest

from game.models import GoldEntry, Player
from jackpot import services
from jackpot.models import Contribution, JackpotPool, LedgerEntry, Win
from tests.jackpot.factories import UserFactory

POOLS = "/api/v1/jackpots/"
CONTRIBUTIONS = "/api/v1/jackpots/contributions/"
LEDGER = "/api/v1/jackpots/ledger/"


def amounts():
    return dict(JackpotPool.objects.values_list("group", "amount"))


def contribute(client, body, key="key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(CONTRIBUTIONS, body, format="json", **headers)


def test_anyone_lists_the_pools(api_client, pools):
    response = api_client.get(POOLS)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [p["group"] for p in results] == ["minor", "major", "mega"]
    assert results[0]["amount"] == pools["minor"].amount
    assert results[0]["version"] == pools["minor"].version
    assert results[0]["config_version"] == pools["minor"].config_version


def test_pool_detail_has_an_etag_and_unknown_group_is_404(api_client, pools, player):
    response = api_client.get(f"{POOLS}major/")
    assert response.status_code == 200
    assert response["ETag"] == f'"{pools["major"].config_version}"'
    assert response["Cache-Control"] == "no-cache"  # the ETag does not follow the amount
    body = response.json()
    assert (body["version"], body["config_version"]) == (1, 1)
    # A bet moves the balance (a stripe), not the ETag (the configuration's version).
    services.contribute(player=player, bet=100_000, operation_id="op-etag")
    again = api_client.get(f"{POOLS}major/")
    assert again["ETag"] == response["ETag"]
    assert again.json()["version"] == 1 and again.json()["amount"] > body["amount"]
    missing = api_client.get(f"{POOLS}giga/")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_group"


def test_contribution_is_created_once_and_replayed(player_client, pools):
    before = amounts()
    first = contribute(player_client, {"bet": 10_000})
    assert first.status_code == 201
    body = first.json()
    assert body["bet"] == 10_000
    assert body["amounts"] == {"minor": 100, "major": 50, "mega": 25}
    replay = contribute(player_client, {"bet": 10_000})
    assert replay.status_code == 201 and replay.json() == body
    assert replay["Idempotent-Replayed"] == "true"
    assert amounts() == {g: before[g] + body["amounts"][g] for g in before}
    assert Contribution.objects.count() == 1


def test_reused_key_with_another_body_is_422(player_client, pools):
    contribute(player_client, {"bet": 10_000})
    before = amounts()
    response = contribute(player_client, {"bet": 20_000})
    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused"
    assert amounts() == before


def test_contribution_needs_a_key(player_client, pools):
    response = contribute(player_client, {"bet": 10_000}, key=None)
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_required"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"bet": 0}, "bet_not_positive"),
        ({"bet": -100}, "bet_not_positive"),
        ({"bet": 10.5}, "bet_not_integer"),
        ({"bet": 2.0**60}, "bet_not_integer"),
        ({"bet": "1e3"}, "bet_not_integer"),
        ({"bet": "1000"}, "bet_not_integer"),
        ({"bet": True}, "bet_not_integer"),
        ({"bet": None}, "bet_required"),
        ({}, "bet_required"),
        ({"bet": 10**40}, "bet_too_large"),
        ([1000], "invalid_body"),
    ],
)
def test_bad_bets_are_400_with_a_code(player_client, pools, body, code):
    before = amounts()
    response = contribute(player_client, body)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert amounts() == before and not Contribution.objects.exists()


def test_malformed_json_is_400(player_client, pools):
    response = player_client.post(
        CONTRIBUTIONS, data="{bet: 1", content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 400 and "code" in response.json()


def test_contribution_needs_a_login_and_a_player(api_client, pools):
    response = contribute(api_client, {"bet": 1000})
    assert response.status_code == 401
    api_client.force_authenticate(UserFactory())
    response = contribute(api_client, {"bet": 1000})
    assert response.status_code == 403 and response.json()["code"] == "player_required"


def test_staff_awards_a_win(staff_client, pools, player):
    response = staff_client.post(
        f"{POOLS}minor/wins/",
        {"player": str(player.pk)},
        format="json",
        HTTP_IDEMPOTENCY_KEY="win-key",
    )
    assert response.status_code == 201
    assert response.json()["amount"] == pools["minor"].amount
    replay = staff_client.post(
        f"{POOLS}minor/wins/",
        {"player": str(player.pk)},
        format="json",
        HTTP_IDEMPOTENCY_KEY="win-key",
    )
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == response.json()
    assert Win.objects.count() == 1
    assert Player.objects.get(pk=player.pk).gold == pools["minor"].amount
    entry = GoldEntry.objects.get(player=player)
    assert (entry.kind, entry.amount) == ("jackpot_win", pools["minor"].amount)
    assert entry.reference == Win.objects.get().operation_id


def test_a_win_without_a_key_is_refused_and_pays_nothing(staff_client, pools, player):
    response = staff_client.post(f"{POOLS}minor/wins/", {"player": str(player.pk)}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_required"
    assert not Win.objects.exists() and not GoldEntry.objects.filter(player=player).exists()
    assert Player.objects.get(pk=player.pk).gold == 0
    assert JackpotPool.objects.get(group="minor").version == pools["minor"].version


def test_game_server_awards_a_win_with_its_token(api_client, pools, player, settings):
    settings.JACKPOT_SERVICE_TOKEN = "game-server-secret"
    response = api_client.post(
        f"{POOLS}mega/wins/",
        {"player": str(player.pk)},
        format="json",
        HTTP_AUTHORIZATION="Bearer game-server-secret",
        HTTP_IDEMPOTENCY_KEY="server-win-1",
    )
    assert response.status_code == 201 and response.json()["amount"] == pools["mega"].amount
    wrong = api_client.post(
        f"{POOLS}mega/wins/",
        {"player": str(player.pk)},
        format="json",
        HTTP_AUTHORIZATION="Bearer nope",
        HTTP_IDEMPOTENCY_KEY="server-win-2",
    )
    assert wrong.status_code in (401, 403) and "code" in wrong.json()


def test_win_refusals(api_client, player_client, pools, player, staff_user):
    url = f"{POOLS}minor/wins/"
    denied = player_client.post(
        url, {"player": str(player.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="not-staff"
    )
    assert denied.status_code == 403
    api_client.credentials()
    api_client.force_authenticate(staff_user)
    cases = [
        (f"{POOLS}giga/wins/", {"player": str(player.pk)}, 404, "unknown_group"),
        (url, {"player": "not-a-uuid"}, 400, "invalid_player"),
        (url, {"player": 5}, 400, "invalid_player"),
        (url, {}, 400, "invalid_player"),
        (url, {"player": str(uuid.uuid4())}, 404, "player_not_found"),
    ]
    for n, (path, body, status, code) in enumerate(cases):
        response = api_client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=f"refused-{n}")
        assert (response.status_code, response.json()["code"]) == (status, code), body
    assert not Win.objects.exists() and amounts()["minor"] == pools["minor"].amount


def test_win_needs_authentication(api_client, pools, player):
    response = api_client.post(f"{POOLS}minor/wins/", {"player": str(player.pk)}, format="json")
    assert response.status_code == 401 and "code" in response.json()


def test_patch_config_with_if_match(staff_client, pools):
    url = f"{POOLS}minor/"
    etag = staff_client.get(url)["ETag"]
    response = staff_client.patch(
        url, {"contribution_rate_bp": 150}, format="json", HTTP_IF_MATCH=etag
    )
    assert response.status_code == 200
    assert response.json()["contribution_rate_bp"] == 150
    assert response["ETag"] == f'"{pools["minor"].config_version + 1}"'
    assert response.json()["config_version"] == pools["minor"].config_version + 1
    stale = staff_client.patch(
        url, {"contribution_rate_bp": 160}, format="json", HTTP_IF_MATCH=etag
    )
    assert stale.status_code == 412 and stale.json()["code"] == "version_conflict"
    missing = staff_client.patch(url, {"contribution_rate_bp": 160}, format="json")
    assert missing.status_code == 428 and missing.json()["code"] == "precondition_required"
    assert JackpotPool.objects.get(group="minor").contribution_rate_bp == 150


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"contribution_rate_bp": 10_001}, "rate_out_of_range"),
        ({"contribution_rate_bp": "100"}, "contribution_rate_bp_not_integer"),
        ({"seed_amount": -1}, "seed_negative"),
        ({"max_amount": 1}, "max_below_seed"),
        ({"amount": 10**9}, "unknown_field"),
        ({"contribution_rate_bp": 9_950}, "rates_exceed_bet"),
        ({"seed_amount": 2**63}, "seed_amount_out_of_range"),
        ({"max_amount": 10**19}, "max_amount_out_of_range"),
    ],
)
def test_patch_refuses_invalid_config(staff_client, pools, body, code):
    url = f"{POOLS}minor/"
    response = staff_client.patch(
        url, body, format="json", HTTP_IF_MATCH=f'"{pools["minor"].config_version}"'
    )
    assert response.status_code == 400 and response.json()["code"] == code
    pool = JackpotPool.objects.get(group="minor")
    assert (pool.version, pool.config_version) == (
        pools["minor"].version,
        pools["minor"].config_version,
    )


def test_patch_is_staff_only_and_404_for_unknown_group(api_client, pools, player, staff_user):
    url = f"{POOLS}minor/"
    api_client.force_authenticate(player.user)
    denied = api_client.patch(url, {"seed_amount": 5}, format="json", HTTP_IF_MATCH='"1"')
    assert denied.status_code == 403
    api_client.force_authenticate(None)
    anonymous = api_client.patch(url, {"seed_amount": 5}, format="json", HTTP_IF_MATCH='"1"')
    assert anonymous.status_code == 401
    api_client.force_authenticate(staff_user)
    response = api_client.patch(f"{POOLS}giga/", {}, format="json", HTTP_IF_MATCH='"1"')
    assert response.status_code == 404 and response.json()["code"] == "unknown_group"
    assert JackpotPool.objects.get(group="minor").seed_amount == pools["minor"].seed_amount


def test_ledger_is_staff_only_paginated_and_filterable(
    api_client, player_client, pools, player, staff_user
):
    contribute(player_client, {"bet": 10_000})
    assert player_client.get(LEDGER).status_code == 403
    player_client.credentials()
    api_client.force_authenticate(staff_user)
    body = api_client.get(LEDGER).json()
    assert set(body) == {"next", "previous", "results"}  # cursor pages: no count
    assert len(body["results"]) == LedgerEntry.objects.count() == 6
    minor = api_client.get(LEDGER, {"group": "minor"}).json()
    assert len(minor["results"]) == 2 and {r["group"] for r in minor["results"]} == {"minor"}
    assert [r["kind"] for r in minor["results"]] == ["contribution", "seed"]
    bad = api_client.get(LEDGER, {"group": "giga"})
    assert bad.status_code == 400 and bad.json()["code"] == "unknown_group"
    assert api_client.get(LEDGER, {"kind": "nope"}).status_code == 400


def test_ledger_pages_are_keysets_that_new_entries_do_not_shift(
    api_client, player_client, pools, staff_user, monkeypatch
):
    from nightstorm.api.pagination import IdCursorPagination

    monkeypatch.setattr(IdCursorPagination, "page_size", 2)
    for i in range(3):
        contribute(player_client, {"bet": 10_000}, key=f"page-{i}")
    api_client.force_authenticate(staff_user)
    first = api_client.get(LEDGER, {"group": "minor"}).json()
    ids = [r["id"] for r in first["results"]]
    assert first["previous"] is None and f"cursor=n{ids[-1]}" in first["next"]
    contribute(player_client, {"bet": 10_000}, key="page-new")  # lands before page one
    second = api_client.get(first["next"]).json()
    older = LedgerEntry.objects.filter(pool__group="minor", id__lt=ids[-1]).order_by("-id")
    assert [r["id"] for r in second["results"]] == list(older.values_list("id", flat=True)[:2])
    back = api_client.get(second["previous"]).json()
    assert [r["id"] for r in back["results"]] == ids


@pytest.mark.parametrize("cursor", ["abc", "n", "x12", "n-1", "cD0x", "n" + "9" * 19])
def test_a_malformed_cursor_is_a_400(api_client, staff_user, cursor):
    api_client.force_authenticate(staff_user)
    response = api_client.get(LEDGER, {"cursor": cursor})
    assert response.status_code == 400 and response.json()["code"] == "invalid_cursor"


def test_contribution_retries_inside_the_idempotent_transaction(player_client, pools, monkeypatch):
    """The view's outer transaction survives a lost attempt (rolled back to its savepoint)."""
    from jackpot import contributions
    from nightstorm.errors import ConcurrencyConflict

    real, calls = contributions._contribute_once, []

    def lose_once(*args, **kwargs):
        calls.append(kwargs["wait"])
        if len(calls) == 1:
            real(*args, **kwargs)  # writes, then loses: the savepoint must undo it
            raise ConcurrencyConflict()
        return real(*args, **kwargs)

    monkeypatch.setattr(contributions, "_contribute_once", lose_once)
    before = amounts()
    response = contribute(player_client, {"bet": 10_000}, key="retry-key")
    assert response.status_code == 201 and calls == [False, True]
    assert amounts() == {g: before[g] + response.json()["amounts"][g] for g in before}
    assert LedgerEntry.objects.filter(kind="contribution").count() == 3


def test_nul_bytes_in_group_or_filters_are_400(staff_client, pools):
    for url in [f"{POOLS}%00/", f"{POOLS}ledger/?operation_id=%00"]:
        response = staff_client.get(url)
        assert response.status_code == 400, url
        assert response.json()["code"] == "bad_request"
