"""Optimistic updates: one conditional UPDATE, conflicts detected, retries converge."""

import pytest
from django.db.models import F

from game.models import Player
from nightstorm.errors import ConcurrencyConflict
from nightstorm.optimistic import apply_versioned, retry_on_conflict, update_versioned
from tests.helpers import race
from tests.nightstorm.factories import make_player


@pytest.mark.django_db
def test_update_bumps_the_version():
    player = make_player()
    assert update_versioned(Player, player.pk, player.version, gold=5) == player.version + 1
    player.refresh_from_db()
    assert (player.gold, player.version) == (5, 2)


@pytest.mark.django_db
def test_a_stale_version_is_a_conflict_and_changes_nothing():
    player = make_player()
    update_versioned(Player, player.pk, 1, gold=5)
    with pytest.raises(ConcurrencyConflict):
        update_versioned(Player, player.pk, 1, gold=99)
    player.refresh_from_db()
    assert (player.gold, player.version) == (5, 2)


@pytest.mark.django_db
def test_soft_delete_hides_the_row_and_is_versioned():
    player = make_player()
    player.soft_delete()
    assert not Player.objects.filter(pk=player.pk).exists()
    assert Player.all_objects.get(pk=player.pk).version == 2


@pytest.mark.django_db
def test_retry_gives_up_after_the_bounded_attempts():
    calls = []

    @retry_on_conflict(attempts=3, base_delay_ms=0)
    def always_conflicts():
        calls.append(1)
        raise ConcurrencyConflict()

    with pytest.raises(ConcurrencyConflict):
        always_conflicts()
    assert len(calls) == 3


def _read_then_write(pk):
    """A read-modify-write: the version check is what keeps it from losing updates."""
    row = Player.objects.get(pk=pk)
    update_versioned(Player, pk, row.version, gold=row.gold + 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_increments_through_the_retry_helper_all_land(settings):
    settings.NIGHTSTORM_MAX_RETRY_ATTEMPTS = 60
    player, workers = make_player(), 16
    outcomes = race(retry_on_conflict(_read_then_write), [(player.pk,)] * workers)
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    player.refresh_from_db()
    assert player.gold == workers
    assert player.version == 1 + workers


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_retries_the_race_shows_as_conflicts():
    """Proves the race above is real: the same work with no retry loses attempts to conflicts."""
    player, workers = make_player(), 16
    outcomes = race(_read_then_write, [(player.pk,)] * workers)
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
    player.refresh_from_db()
    assert conflicts, "16 overlapping read-modify-writes should collide at least once"
    assert player.gold == workers - len(conflicts)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_blind_write_without_the_version_check_loses_updates():
    """What the version check prevents: the same read-modify-write, unconditioned."""
    player, workers = make_player(), 16

    def blind(pk):
        row = Player.objects.get(pk=pk)
        Player.objects.filter(pk=pk).update(gold=row.gold + 1, version=F("version") + 1)

    race(blind, [(player.pk,)] * workers)
    player.refresh_from_db()
    assert player.gold < workers


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_apply_versioned_rereads_on_every_attempt(settings):
    settings.NIGHTSTORM_MAX_RETRY_ATTEMPTS = 60
    player, workers = make_player(), 12
    outcomes = race(
        lambda pk: apply_versioned(Player, pk, lambda row: {"xp": row.xp + 10}),
        [(player.pk,)] * workers,
    )
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    player.refresh_from_db()
    assert player.xp == 10 * workers
