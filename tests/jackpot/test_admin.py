"""The jackpot admin: ledgered adjustments, stale saves refused, the ledger read-only."""

import uuid

import pytest

from jackpot import services
from jackpot.models import JackpotPool, LedgerEntry, PoolStripe
from tests.jackpot.factories import UserFactory


@pytest.fixture
def admin_client(client, db, settings):
    settings.SESSION_COOKIE_SECURE = False  # the test client speaks plain HTTP
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def change_url(pool):
    return f"/admin/jackpot/jackpotpool/{pool.pk}/change/"


def form_data(pool, **overrides):
    data = {
        "seed_amount": pool.seed_amount,
        "contribution_rate_bp": pool.contribution_rate_bp,
        "max_amount": pool.max_amount if pool.max_amount is not None else "",
        "adjustment": "",
        "adjustment_note": "",
        "adjustment_token": uuid.uuid4().hex,
        "expected_version": pool.config_version,
    }
    data.update(overrides)
    return data


def test_pool_list_shows_the_audit(admin_client, pools):
    response = admin_client.get("/admin/jackpot/jackpotpool/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "ledger ok" in content.lower() and "icon-yes" in content and "icon-no" not in content
    PoolStripe.objects.filter(pool__group="minor", slot=0).update(amount=7)  # no ledger row
    assert "icon-no" in admin_client.get("/admin/jackpot/jackpotpool/").content.decode()


def test_admin_edit_changes_config_and_adjusts_through_the_ledger(admin_client, pools):
    minor = pools["minor"]
    response = admin_client.post(
        change_url(minor),
        form_data(minor, contribution_rate_bp=120, adjustment=250, adjustment_note="promo"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    pool = JackpotPool.objects.get(group="minor")
    assert pool.contribution_rate_bp == 120 and pool.amount == minor.amount + 250
    entry = LedgerEntry.objects.get(pool=pool, kind="adjustment")
    assert entry.amount == 250 and "promo" in entry.note
    assert pool.version == minor.version + 2  # configuration, then adjustment
    assert pool.config_version == minor.config_version + 1  # the adjustment does not count


def test_the_change_form_carries_the_configuration_version_and_a_token(admin_client, pools):
    minor = pools["minor"]
    services.adjust_pool(group="minor", delta=10, operation_id="moves-the-balance")
    content = admin_client.get(change_url(minor)).content.decode()
    pool = JackpotPool.objects.get(group="minor")
    assert pool.version == minor.version + 1 and pool.config_version == minor.config_version
    assert f'name="expected_version" value="{pool.config_version}"' in content
    assert 'name="adjustment_token" value="' in content


def test_admin_save_succeeds_after_bets_moved_the_balance(admin_client, pools, player):
    """Bets move the balance, not the configuration the game master opened: no conflict."""
    minor = pools["minor"]
    services.contribute(player=player, bet=100_000, operation_id="meanwhile")
    current = JackpotPool.objects.get(group="minor")
    assert current.amount > minor.amount
    response = admin_client.post(
        change_url(minor), form_data(minor, contribution_rate_bp=300, adjustment=100)
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    after = JackpotPool.objects.get(group="minor")
    assert after.contribution_rate_bp == 300 and after.amount == current.amount + 100
    assert after.config_version == minor.config_version + 1


def test_stale_admin_save_shows_an_error_and_changes_nothing(admin_client, pools):
    """Another configuration edit since the page was opened: refused, nothing applied."""
    minor = pools["minor"]
    services.update_config(
        group="minor", changes={"seed_amount": 2_000}, expected_version=minor.config_version
    )
    current = JackpotPool.objects.get(group="minor")
    response = admin_client.post(
        change_url(minor), form_data(minor, contribution_rate_bp=300, adjustment=100)
    )
    assert response.status_code == 200
    assert "Someone else changed this pool&#x27;s configuration" in response.content.decode()
    after = JackpotPool.objects.get(group="minor")
    assert (after.amount, after.contribution_rate_bp, after.version, after.config_version) == (
        current.amount,
        current.contribution_rate_bp,
        current.version,
        current.config_version,
    )
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()


def test_a_double_submitted_adjustment_applies_once(admin_client, pools):
    minor = pools["minor"]
    data = form_data(minor, adjustment=250, adjustment_note="promo")
    for _ in range(2):
        response = admin_client.post(change_url(minor), data)
        assert response.status_code == 302, response.content.decode()[:2000]
    assert JackpotPool.objects.get(group="minor").amount == minor.amount + 250
    assert LedgerEntry.objects.filter(pool=minor, kind="adjustment").count() == 1
    # A fresh page (a new token) is a new adjustment.
    response = admin_client.post(change_url(minor), form_data(minor, adjustment=250))
    assert response.status_code == 302
    assert LedgerEntry.objects.filter(pool=minor, kind="adjustment").count() == 2


def test_an_adjustment_without_the_form_token_is_refused(admin_client, pools):
    minor = pools["minor"]
    for token in ("", "not-a-token"):
        response = admin_client.post(
            change_url(minor), form_data(minor, adjustment=250, adjustment_token=token)
        )
        assert response.status_code == 200 and "adjustment token" in response.content.decode()
    assert JackpotPool.objects.get(group="minor").amount == minor.amount
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()


def test_admin_refuses_invalid_config_and_negative_adjustment(admin_client, pools):
    minor = pools["minor"]
    for overrides in ({"contribution_rate_bp": 9_990}, {"adjustment": -(10**9)}):
        response = admin_client.post(change_url(minor), form_data(minor, **overrides))
        assert response.status_code == 200 and "errornote" in response.content.decode()
    assert JackpotPool.objects.get(group="minor").version == minor.version


def test_ledger_admin_is_read_only(admin_client, pools):
    entry = LedgerEntry.objects.first()
    assert admin_client.get("/admin/jackpot/ledgerentry/").status_code == 200
    assert admin_client.get("/admin/jackpot/ledgerentry/?kind__exact=seed").status_code == 200
    url = f"/admin/jackpot/ledgerentry/{entry.pk}/change/"
    assert admin_client.get(url).status_code == 200  # view only
    assert admin_client.post(url, {"amount": 0}).status_code == 403
    assert admin_client.post(f"/admin/jackpot/ledgerentry/{entry.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/jackpot/ledgerentry/add/").status_code == 403
    assert LedgerEntry.objects.get(pk=entry.pk).amount == entry.amount
