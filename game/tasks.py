"""django-q2 entry points of the game. Each tolerates running twice, or two at once."""

from django.conf import settings

from game import combat_turns, travel

# Stay below django-q2's task timeout and the once-a-minute schedule period, so two runs of
# the schedule overlap little (and when they do, SKIP LOCKED + next_turn_at keep every combat
# at one turn per tick).
TICK_RUN_SECONDS = 55


def combat_tick() -> dict:
    """Start events whose registration closed and advance running combats, one tick every
    NIGHTSTORM_COMBAT_TICK_SECONDS, for just under a minute."""
    budget = min(TICK_RUN_SECONDS, settings.Q_CLUSTER.get("timeout", 60) - 5)
    reports = combat_turns.run_ticks(duration=max(1, budget))
    return {
        "ticks": len(reports),
        "advanced": sum(r.advanced for r in reports),
        "finished": sum(r.finished for r in reports),
        "failed": sum(r.failed for r in reports),
    }


def apply_arrivals() -> int:
    """Land every journey that is due."""
    return travel.apply_arrivals()
