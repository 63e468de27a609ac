"""`represent` renders what `Serializer(instance).data` would, with one shared serializer."""

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from rest_framework import serializers

from game.api import JourneyOut, PlayerOut, RegistrationOut
from nightstorm.api.representation import represent


class _Place(serializers.Serializer):
    code = serializers.CharField()


class _Trip(serializers.Serializer):
    origin = serializers.CharField(source="origin.code", allow_null=True, default=None)
    stop = _Place(allow_null=True, default=None)
    at = serializers.DateTimeField()
    seats = serializers.IntegerField()


def _trip(n: int):
    return SimpleNamespace(
        origin=SimpleNamespace(code=f"Z{n}") if n % 3 else None,
        stop=SimpleNamespace(code=f"S{n}") if n % 2 else None,
        at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n, microseconds=n % 7),
        seats=n,
    )


def test_it_renders_what_data_holds():
    for n in range(12):
        assert represent(_Trip, _trip(n)) == _Trip(_trip(n)).data


def test_the_platforms_output_serializers_render_the_same():
    zone = SimpleNamespace(code="ASH1")
    now = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
    journey = SimpleNamespace(
        origin=zone,
        destination=SimpleNamespace(code="ASH2"),
        started_at=now,
        arrives_at=now + timedelta(seconds=90),
    )
    player = SimpleNamespace(
        id="6a1f0c1e-1b5e-4a4e-9c59-1d3b1f0a2b3c",
        name="ana",
        zone=zone,
        gold=7,
        hp=100,
        level=2,
        xp=30,
        version=4,
        journey_in_flight=journey,
    )
    seat = SimpleNamespace(combat_id=player.id, player_id=player.id, created_at=now)
    for serializer, instance in (
        (JourneyOut, journey),
        (PlayerOut, player),
        (RegistrationOut, seat),
    ):
        assert represent(serializer, instance) == serializer(instance).data
    player.journey_in_flight = None
    assert represent(PlayerOut, player)["travel"] is None


class _Remembering(serializers.IntegerField):
    """A field that keeps its value on itself while rendering: wrong for a shared instance."""

    def to_representation(self, value):
        self.last = value
        time.sleep(0.0002)  # another thread renders meanwhile
        return self.last


class _Careless(serializers.Serializer):
    seats = _Remembering()


def _mixed_answers(serializer) -> list:
    """The renders that came back wrong, with 8 threads sharing `represent`'s instance."""
    wrong, barrier = [], threading.Barrier(8)

    def render(offset):
        barrier.wait()
        for n in range(offset, offset + 400, 8):
            if represent(serializer, _trip(n)) != serializer(_trip(n)).data:
                wrong.append(n)

    threads = [threading.Thread(target=render, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wrong


def test_threads_share_one_serializer_without_mixing_their_answers():
    assert _mixed_answers(_Trip) == []


def test_control_a_field_that_keeps_state_mixes_answers_when_shared():
    """CONTROL: the same threads through a serializer whose field writes on itself while it
    renders get each other's values: the harness above can see a shared instance go wrong."""
    assert _mixed_answers(_Careless)
