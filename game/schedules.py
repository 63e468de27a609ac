"""The game's recurring django-q2 schedules, kept as declared by `ensure_schedules` after every
`migrate` (see GameConfig.ready) and by the Nightstorm schedule check (cluster start, watchdog).
The per-zone Nightstorm schedules are kept by `game.storms.schedules`.

The combat loop is not a schedule: it is its own process, `manage.py run_orchestrator`.
A `game:` schedule that is no longer declared here (`game:combat_tick`, which hosted the loop
before) is deleted from existing databases by `retire_undeclared()`.
"""

from nightstorm.schedules import ScheduleSpec, ensure_schedules

PREFIX = "game:"

GAME_SCHEDULES = [
    ScheduleSpec("game:arrivals", "game.tasks.apply_arrivals", minutes=1),
    # The watchdog behind the per-zone Nightstorm schedules and the orchestrators' heartbeats
    # (see game.storms.firing.watchdog).
    ScheduleSpec("game:schedule_watchdog", "game.storms.firing.watchdog", minutes=5),
]


def retire_undeclared() -> list[str]:
    """Delete the `game:` schedules no longer declared; return their names."""
    from django_q.models import Schedule

    declared = {spec.name for spec in GAME_SCHEDULES}
    stale = Schedule.objects.filter(name__startswith=PREFIX).exclude(name__in=declared)
    names = sorted(stale.values_list("name", flat=True))
    if names:
        stale.delete()
    return names


def keep_declared() -> dict[str, str]:
    """Create or repair the declared game schedules and retire undeclared ones; return what
    changed: name -> "created", "repaired" or "deleted"."""
    changes = {
        name: outcome
        for name, outcome in ensure_schedules(GAME_SCHEDULES).items()
        if outcome != "ok"
    }
    changes.update(dict.fromkeys(retire_undeclared(), "deleted"))
    return changes


def retire_after_migrate(sender, using="default", **kwargs) -> None:
    """post_migrate: the declared schedules are ensured by the toolkit's receiver; this one
    removes the game's retired ones."""
    from django.db import connections

    if "django_q_schedule" in connections[using].introspection.table_names():
        retire_undeclared()
