"""`/health/`'s checks of the Nightstorm lifecycle (registered in GameConfig.ready).

- `scheduler`: every zone has its schedule, none overdue or misconfigured, the task cluster
  alive (down / degraded).
- `orchestrator`: every `run_orchestrator` process with its last heartbeat; `ok` when at least
  one beat within ORCHESTRATOR_STALE_TICKS tick periods, `degraded` otherwise. Not required, so
  it never turns `/health/` into a 503: combats wait, nothing else breaks.
"""

from datetime import timedelta

from django.utils import timezone

from nightstorm.models import Heartbeat

OK, DEGRADED, DOWN = "ok", "degraded", "down"

HEARTBEAT_PREFIX = "orchestrator:"
ORCHESTRATOR_STALE_TICKS = 3
# A beat this old belongs to a process that died without removing it (SIGKILL, a lost host).
PRUNE_AFTER = timedelta(hours=1)


def check_scheduler() -> tuple[str, dict]:
    """Every zone scheduled, none overdue, cluster alive."""
    from game.storms.schedules import problems, zone_schedules
    from nightstorm.health import check_task_cluster

    found = problems()
    cluster_state, cluster = check_task_cluster()
    details = {"zones_scheduled": len(zone_schedules()), "problems": found}
    if cluster_state != OK:
        found = [*found, f"task cluster: {cluster.get('reason', cluster_state)}"]
        details["problems"] = found
    if any("without a schedule" in p for p in found) or cluster_state != OK:
        return DOWN, details
    return (DEGRADED if found else OK), details


def stale_after() -> float:
    from game.storms.orchestrator import tick_seconds

    return ORCHESTRATOR_STALE_TICKS * tick_seconds()


def check_orchestrators() -> tuple[str, dict]:
    """Each orchestrator's last beat; ok when one beat within a few tick periods."""
    now = timezone.now()
    limit = stale_after()
    rows = Heartbeat.objects.filter(name__startswith=HEARTBEAT_PREFIX).order_by("-beat_at")
    listed = []
    for name, beat_at in rows.values_list("name", "beat_at"):
        age = (now - beat_at).total_seconds()
        listed.append(
            {
                "name": name.removeprefix(HEARTBEAT_PREFIX),
                "last_beat": beat_at.isoformat(),
                "age_seconds": round(age, 1),
                "alive": age <= limit,
            }
        )
    alive = sum(o["alive"] for o in listed)
    details = {"alive": alive, "stale_after_seconds": limit, "orchestrators": listed}
    if alive:
        return OK, details
    if listed:
        reason = f"no orchestrator beat in the last {limit:g} s"
    else:
        reason = "no orchestrator is running"
    return DEGRADED, {**details, "reason": f"{reason}: start manage.py run_orchestrator"}


def prune_stale_orchestrators(older_than: timedelta = PRUNE_AFTER) -> int:
    """Forget orchestrators whose last beat is older than `older_than`; return how many."""
    cutoff = timezone.now() - older_than
    deleted, _ = Heartbeat.objects.filter(
        name__startswith=HEARTBEAT_PREFIX, beat_at__lt=cutoff
    ).delete()
    return deleted
