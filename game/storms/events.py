"""Nightstorm events and the combat lifecycle: open -> running -> finished (or cancelled).

Every function here is idempotent: calling it again (a schedule fired twice, a retried task, a
game master clicking twice) changes nothing more. Each locks the rows it changes in one fixed
order — the event, then its combats by primary key — before reading them. Paths that hold a
combat lock (the orchestrator finishing a combat, a cancel) never take the event's lock in the
same transaction: the event's state is settled afterwards by `settle_events`, a single UPDATE
in its own transaction, so no two paths can wait on each other in opposite orders.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from game import metrics, rewards
from game.models import Combat, NightstormEvent, Player, Registration, Zone
from nightstorm.operations import operation

ACTIVE = (Combat.Status.OPEN, Combat.Status.RUNNING)


@operation("game.open_nightstorm")
def open_nightstorm(*, zone: Zone | int | str, slot: datetime) -> NightstormEvent:
    """Get or create the event of `zone` at `slot` and its combats.

    Two callers racing (a schedule delivered twice) both end with the same event and the same
    NIGHTSTORM_COMBATS_PER_EVENT combats: the unique (zone, slot) and (event, index)
    constraints decide, and the loser's inserts are ignored.
    """
    if not isinstance(zone, Zone):
        lookup = {"code": zone} if isinstance(zone, str) else {"pk": zone}
        zone = Zone.objects.get(**lookup)
    window = timedelta(seconds=settings.NIGHTSTORM_REGISTRATION_WINDOW_SECONDS)
    with transaction.atomic():
        # get_or_create retries the read when its insert hits the unique constraint.
        event, _ = NightstormEvent.objects.get_or_create(
            zone=zone, slot=slot, defaults={"registration_closes_at": slot + window}
        )
        combats = [
            Combat(
                event=event,
                zone=zone,
                index=i,
                capacity=settings.NIGHTSTORM_COMBAT_CAPACITY,
                boss_max_hp=zone.boss_hp,
                boss_hp=zone.boss_hp,
            )
            for i in range(1, settings.NIGHTSTORM_COMBATS_PER_EVENT + 1)
        ]
        Combat.objects.bulk_create(combats, ignore_conflicts=True)
    return event


def _start_locked(combat: Combat, now: datetime) -> str:
    """Start an open combat (locked by the caller): running if it has players, else cancelled."""
    if combat.status != Combat.Status.OPEN:
        return combat.status
    seats = Registration.objects.filter(combat=combat, active=True)
    if not seats.exists():
        return _end_locked(combat, Combat.Status.CANCELLED, now)
    # Everyone enters the fight with their current hp.
    seats.update(
        hp=Subquery(Player.all_objects.filter(pk=OuterRef("player_id")).values("hp")[:1]),
        damage_dealt=0,
    )
    combat.status = Combat.Status.RUNNING
    combat.turn = 0
    combat.boss_hp = combat.boss_max_hp
    combat.started_at = now
    combat.next_turn_at = now
    combat.version += 1
    combat.updated_at = now
    combat.save(
        update_fields=[
            "status",
            "turn",
            "boss_hp",
            "started_at",
            "next_turn_at",
            "version",
            "updated_at",
        ]
    )
    return combat.status


def _end_locked(
    combat: Combat,
    status: str,
    now: datetime,
    *,
    outcome: str = "",
    registrations: list[Registration] | None = None,
) -> str:
    """Finish or cancel a combat (locked by the caller); free its seats; write rewards when it
    finished. Joins the caller's transaction."""
    combat.status = status
    combat.outcome = outcome
    combat.finished_at = now
    combat.next_turn_at = None
    combat.version += 1
    combat.updated_at = now
    combat.save(
        update_fields=["status", "outcome", "finished_at", "next_turn_at", "version", "updated_at"]
    )
    Registration.objects.filter(combat=combat, active=True).update(active=False)
    if status == Combat.Status.FINISHED:
        if registrations is None:
            registrations = list(Registration.objects.filter(combat=combat))
        rewards.write_rewards(combat=combat, registrations=registrations, outcome=outcome)
        metrics.COMBATS_FINISHED.labels(outcome or "none").inc()
    return status


def settle_events(event_ids) -> int:
    """Mark events finished once none of their combats is open or running; return how many.

    One UPDATE that locks only event rows: run it after (not inside) a transaction that holds
    combat locks.
    """
    active = Combat.objects.filter(event_id=OuterRef("pk"), status__in=ACTIVE)
    return (
        NightstormEvent.objects.filter(pk__in=list(event_ids))
        .exclude(state=NightstormEvent.State.FINISHED)
        .filter(~Exists(active))
        .update(state=NightstormEvent.State.FINISHED)
    )


@operation("game.start_event")
def start_event(*, event_id, now: datetime | None = None) -> dict[str, int]:
    """Close registration of an event and start its combats; empty combats are cancelled."""
    now = now or timezone.now()
    counts = {"running": 0, "cancelled": 0}
    with transaction.atomic():
        event = NightstormEvent.objects.select_for_update().filter(pk=event_id).first()
        # A running event may still have open combats (one was started early by hand).
        if event is None or event.state == NightstormEvent.State.FINISHED:
            return counts
        combats = list(
            Combat.objects.select_for_update()
            .filter(event=event, status=Combat.Status.OPEN)
            .order_by("pk")
        )
        for combat in combats:
            state = _start_locked(combat, now)
            if state in counts:
                counts[state] += 1
        NightstormEvent.objects.filter(pk=event.pk, state=NightstormEvent.State.OPEN).update(
            state=NightstormEvent.State.RUNNING
        )
        settle_events([event.pk])  # the event's lock is already ours
    return counts


def start_due_events(*, now: datetime | None = None) -> int:
    """Start every open event whose registration window has closed; return how many."""
    now = now or timezone.now()
    due = NightstormEvent.objects.filter(
        state=NightstormEvent.State.OPEN, registration_closes_at__lte=now
    ).values_list("pk", flat=True)
    started = 0
    for event_id in list(due):
        counts = start_event(event_id=event_id, now=now)
        started += bool(counts["running"] or counts["cancelled"])
    return started


@operation("game.start_combat")
def start_combat(*, combat_id, now: datetime | None = None) -> str:
    """Start one open combat now (the admin's "start now"); returns its status."""
    now = now or timezone.now()
    event_id = Combat.objects.filter(pk=combat_id).values_list("event_id", flat=True).first()
    if event_id is None:
        return "missing"
    with transaction.atomic():
        # Event first, then the combat: the same order as start_event.
        NightstormEvent.objects.select_for_update().filter(pk=event_id).values("pk").first()
        combat = Combat.objects.select_for_update().get(pk=combat_id)
        status = _start_locked(combat, now)
        if status == Combat.Status.RUNNING:
            NightstormEvent.objects.filter(pk=event_id, state=NightstormEvent.State.OPEN).update(
                state=NightstormEvent.State.RUNNING
            )
    settle_events([event_id])
    return status


@operation("game.cancel_combat")
def cancel_combat(*, combat_id, now: datetime | None = None) -> str:
    """Cancel an open or running combat (no rewards); frees its seats. Returns its status."""
    now = now or timezone.now()
    with transaction.atomic():
        combat = Combat.objects.select_for_update().filter(pk=combat_id).first()
        if combat is None:
            return "missing"
        status = combat.status
        if status in ACTIVE:
            status = _end_locked(combat, Combat.Status.CANCELLED, now)
    settle_events([combat.event_id])
    return status


@operation("game.finish_combat")
def finish_combat(*, combat_id, outcome: str, now: datetime | None = None) -> str:
    """Finish a running combat with `outcome` and write its rewards (once)."""
    now = now or timezone.now()
    with transaction.atomic():
        combat = Combat.objects.select_for_update().filter(pk=combat_id).first()
        if combat is None:
            return "missing"
        status = combat.status
        if status == Combat.Status.RUNNING:
            status = _end_locked(combat, Combat.Status.FINISHED, now, outcome=outcome)
    settle_events([combat.event_id])
    return status


__all__ = [
    "cancel_combat",
    "finish_combat",
    "open_nightstorm",
    "settle_events",
    "start_combat",
    "start_due_events",
    "start_event",
]
