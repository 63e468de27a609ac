"""django-q2 entry points of the toolkit. Each tolerates running twice."""

from django.utils import timezone

from nightstorm import outbox
from nightstorm.metrics import OUTBOX_DEAD_NOW, DependencyProbe
from nightstorm.models import Heartbeat, OutboxJob


def heartbeat() -> None:
    """Proves a cluster worker ran recently; read by the `task_cluster` health check. Also
    refreshes the Redis and database gauges from the cluster's host."""
    Heartbeat.objects.update_or_create(name="cluster", defaults={"beat_at": timezone.now()})
    DependencyProbe(interval=0).maybe_run()


def drain_outbox() -> dict:
    result = outbox.drain()
    OUTBOX_DEAD_NOW.set(OutboxJob.objects.filter(state=OutboxJob.State.DEAD).count())
    return result


def prune_idempotency_records() -> int:
    from datetime import timedelta

    from django.conf import settings

    from nightstorm.models import IdempotencyRecord

    cutoff = timezone.now() - timedelta(hours=settings.NIGHTSTORM_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
