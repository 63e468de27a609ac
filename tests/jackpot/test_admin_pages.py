"""The jackpot admin as a game master reads and uses it: money and rates formatted, pools in
order, each pool's ledger a click away, a win awarded through the service (once per form),
the ledger filtered by date and exported as CSV."""

import csv
import io
import uuid

import pytest
from django.contrib.admin.models import LogEntry

from jackpot import services
from jackpot.models import JackpotPool, LedgerEntry, Win
from tests.jackpot.factories import PlayerFactory, UserFactory


@pytest.fixture
def gm(client, db):
    client.force_login(UserFactory(username="gm", is_staff=True, is_superuser=True))
    return client


def test_pools_read_as_money_and_percentages_in_their_order(gm, pools):
    services.adjust_pool(group="mega", delta=123_456_789, operation_id="t:1", note="")
    page = gm.get("/admin/jackpot/jackpotpool/").content.decode()
    assert page.index(">Minor<") < page.index(">Major<") < page.index(">Mega<")
    mega = JackpotPool.objects.get(group="mega")
    whole, cents = divmod(mega.amount, 100)
    assert f"{whole:,}.{cents:02d}" in page
    assert f"{mega.contribution_rate_bp // 100}.{mega.contribution_rate_bp % 100:02d} %" in page
    assert "/admin/jackpot/ledgerentry/?pool__group__exact=minor" in page
    dashboard = gm.get("/admin/").content.decode()
    assert 'id="panel-pools"' in dashboard and f"{whole:,}.{cents:02d}" in dashboard


def test_a_win_is_awarded_through_the_service_once_per_form(gm, pools):
    player = PlayerFactory()
    pool = JackpotPool.objects.get(group="major")
    held = pool.amount
    url = f"/admin/jackpot/jackpotpool/{pool.pk}/award/"
    assert gm.get(url).status_code == 200
    token = uuid.uuid4().hex
    for _ in range(2):  # the same form submitted twice
        response = gm.post(url, {"player": player.name, "token": token}, follow=True)
        assert response.status_code == 200
    assert Win.objects.filter(pool=pool).count() == 1
    assert Win.objects.get(pool=pool).amount == held
    pool.refresh_from_db()
    assert pool.amount == pool.seed_amount
    entries = LogEntry.objects.filter(object_id=str(pool.pk), user__username="gm")
    assert [e.change_message.split(":")[0] for e in entries] == [f"Awarded a win to {player.name}"]
    unknown = gm.post(url, {"player": "nobody-at-all", "token": uuid.uuid4().hex})
    assert b"No player is called" in unknown.content
    assert Win.objects.count() == 1


def test_the_ledger_filters_by_date_and_exports_what_it_shows(gm, pools):
    services.adjust_pool(group="minor", delta=500, operation_id="t:csv", note="a note")
    listing = gm.get("/admin/jackpot/ledgerentry/?pool__group__exact=minor")
    assert listing.status_code == 200
    assert b"export.csv?pool__group__exact=minor" in listing.content
    assert (
        gm.get(
            "/admin/jackpot/ledgerentry/?created_at__gte=2000-01-01+00:00:00%2B00:00"
        ).status_code
        == 200
    )
    export = gm.get("/admin/jackpot/ledgerentry/export.csv?pool__group__exact=minor")
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert {r["pool"] for r in rows} == {"minor"}
    assert len(rows) == LedgerEntry.objects.filter(pool__group="minor").count()
    assert any(r["operation_id"] == "t:csv" and r["amount"] == "500" for r in rows)
    everything = gm.get("/admin/jackpot/ledgerentry/export.csv")
    assert len(everything.content.decode().splitlines()) == LedgerEntry.objects.count() + 1
