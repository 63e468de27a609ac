"""The world of a load run: migrated and seeded, the load players, and the Nightstorms the
players storm (opened by the runner in the load zones while the workload runs)."""

import threading
import time

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

# Two neighbouring zones: players travel between them (35 s) and storm the combats of the one
# they are in; two zones keep many contenders on each Nightstorm's few seats.
ZONES = ("ASH1", "ASH2")
PREFIX = "loadplayer"
PASSWORD = "load-player-password-4817"


def prepare(*, players: int, out) -> list[list]:
    """Migrate, seed the world and the pools, check the schedules, and make sure `players`
    load players exist with a token and PASSWORD. Returns [token, user id, player id, name]."""
    from bench.__main__ import prepare_database
    from bench.common import ensure_players
    from game.models import Zone
    from game.world import seed_world
    from jackpot.pools import ensure_default_pools

    prepare_database()  # creates the database when missing, then migrates
    counts = seed_world()
    ensure_default_pools()
    call_command("ensure_schedules", stdout=out)
    print(
        f"  world: zones {counts['zones_created']} created; routes {counts['routes_created']} "
        "created",
        file=out,
    )

    names = [f"{PREFIX}{i:05d}" for i in range(players)]
    existing = get_user_model().objects.filter(username__in=names).count()
    zones = list(Zone.objects.filter(code__in=ZONES).order_by("code"))
    # With the run's hasher; one hash for every load player.
    seeded = ensure_players(names, make_password(PASSWORD), lambda i: zones[i % len(zones)])
    print(f"  load players: {len(names)} ({len(names) - existing} new)", file=out)
    return [[p.token, p.user_id, str(p.player_id), p.name] for p in seeded]


class StormOpener(threading.Thread):
    """Opens a Nightstorm in every load zone every `every` seconds (as the zone's schedule
    would, through `open_nightstorm`), so each stage has storms to join."""

    def __init__(self, every: float):
        super().__init__(name="storm-opener", daemon=True)
        self.every = every
        self.halt = threading.Event()
        self.opened = 0
        self.error: Exception | None = None

    def run(self):
        from game.storms.events import open_nightstorm

        try:
            while not self.halt.is_set():
                slot = timezone.now().replace(microsecond=0)
                for code in ZONES:
                    open_nightstorm(zone=code, slot=slot)
                    self.opened += 1
                self.halt.wait(self.every)
        except Exception as exc:  # reported by the runner
            self.error = exc
        finally:
            connections.close_all()

    def stop(self):
        self.halt.set()
        self.join(timeout=30)


def settle(timeout: float) -> dict[str, int]:
    """Wait (at most `timeout` s) until the combats of the load zones have ended and every
    reward is paid: the orchestrator starts and fights them, the task cluster pays. Returns
    what is still in flight (combats not ended, rewards not paid) when it stops waiting."""
    from game.models import Combat, Reward

    deadline = time.monotonic() + timeout
    while True:
        left = {
            "combats": Combat.objects.filter(
                zone__code__in=ZONES, status__in=[Combat.Status.OPEN, Combat.Status.RUNNING]
            ).count(),
            "rewards": Reward.objects.filter(paid_at__isnull=True).count(),
        }
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(1)
