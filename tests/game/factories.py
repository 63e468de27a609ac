"""Factories for game tests: zones, players (fast, in bulk), events and combats."""

import itertools
import uuid
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from game.models import Combat, NightstormEvent, Player, Registration, Route, Zone
from game.storms import events as nightstorms

_seq = itertools.count()


class ZoneFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Zone
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"T{n:03d}")
    name = factory.Sequence(lambda n: f"Test Zone {n}")
    region = "Testlands"
    boss_hp = 1000
    boss_attack = 10


def make_zones(n: int = 2, *, route_seconds: int = 60) -> list[Zone]:
    zones = [ZoneFactory() for _ in range(n)]
    Route.objects.bulk_create(
        [
            Route(origin=a, destination=b, seconds=route_seconds)
            for a in zones
            for b in zones
            if a.pk != b.pk
        ],
        ignore_conflicts=True,
    )
    return zones


def make_players(n: int, *, zone: Zone | None = None, password: str = "pw") -> list[Player]:
    """`n` users with players, in two bulk inserts (one password hash for all)."""
    User = get_user_model()
    tag = uuid.uuid4().hex[:8]
    hashed = make_password(password)
    users = User.objects.bulk_create(
        [User(username=f"p{tag}{i}", password=hashed) for i in range(n)]
    )
    return Player.objects.bulk_create([Player(user=u, name=u.username, zone=zone) for u in users])


def make_event(zone: Zone, *, slot=None) -> NightstormEvent:
    slot = slot or timezone.now().replace(microsecond=0) + timedelta(minutes=next(_seq))
    return nightstorms.open_nightstorm(zone=zone, slot=slot)


def make_running_combats(
    n: int, *, seats: int = 10, zone: Zone | None = None, boss_hp: int = 100_000
) -> list[Combat]:
    """`n` running combats of `seats` players each, due now (bulk inserts)."""
    zone = zone or ZoneFactory()
    now = timezone.now()
    event = NightstormEvent.objects.create(
        zone=zone, slot=now + timedelta(days=next(_seq)), state="running"
    )
    combats = Combat.objects.bulk_create(
        [
            Combat(
                event=event,
                zone=zone,
                index=i + 1,
                status="running",
                capacity=seats,
                seats=seats,
                boss_max_hp=boss_hp,
                boss_hp=boss_hp,
                next_turn_at=now - timedelta(seconds=1),
                started_at=now,
            )
            for i in range(n)
        ]
    )
    players = make_players(n * seats, zone=zone)
    Registration.objects.bulk_create(
        [
            Registration(combat=c, player=players[i * seats + j], hp=100)
            for i, c in enumerate(combats)
            for j in range(seats)
        ]
    )
    return combats
