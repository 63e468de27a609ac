"""The retry queue: work recorded with its cause, applied exactly once, retried, or dead.

    @handler("game.pay_reward")
    def pay_reward(payload): ...          # runs inside the job's transaction

    enqueue("game.pay_reward", {"reward": str(reward.pk)}, dedupe_key=f"reward:{reward.pk}")

`enqueue` writes an `OutboxJob` in the caller's transaction and, once that commits, hands its id
to django-q2 (never before the commit, never after a rollback). The hand-over is a robust
`on_commit` callback: the cause has committed by then, so a broker that is away must not turn
the request into a 500; the failure is logged and the job, pending in the database, is run by
`drain_outbox` (every minute) instead.

`run_job` locks the job row (`SKIP LOCKED`: a second runner moves on), runs the handler in a
savepoint and marks the job done in the same transaction. The handler's database
effects and the "done" mark therefore commit together: a task delivered twice finds the job
done, and a worker killed halfway leaves it pending for `drain_outbox`. A handler must keep its
side effects in the database (or make outside effects idempotent).

A failing handler is rolled back to its savepoint; the job backs off exponentially and after
`max_attempts` is marked dead, visible in the admin with a "retry now" action.
"""

import logging
import traceback
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from nightstorm import metrics
from nightstorm.models import OutboxJob
from nightstorm.operations import operation

log = logging.getLogger(__name__)

_handlers: dict[str, Callable[[dict], None]] = {}


def handler(kind: str):
    """Register the function that applies jobs of `kind`."""

    def register(fn):
        if kind in _handlers and _handlers[kind] is not fn:
            raise ValueError(f"outbox handler {kind!r} registered twice")
        _handlers[kind] = fn
        return fn

    return register


def _dispatch(job_id: int) -> None:
    from django_q.tasks import async_task

    async_task("nightstorm.outbox.run_job", job_id, task_name=f"outbox:{job_id}")


def _dispatch_on_commit(job_id: int) -> None:
    """Hand the job to the task queue once the current transaction commits. Robust: an error
    there is logged by Django and leaves the job pending for `drain`."""

    def dispatch_outbox_job():  # named: Django's log line for a failed callback shows it
        _dispatch(job_id)

    transaction.on_commit(dispatch_outbox_job, robust=True)


def enqueue(
    kind: str, payload: dict, *, dedupe_key: str | None = None, max_attempts: int | None = None
) -> OutboxJob:
    """Record a job in the current transaction; dispatch it once the transaction commits.

    With `dedupe_key`, a second enqueue of the same key returns the first job unchanged.
    """
    if kind not in _handlers:
        raise ValueError(f"no outbox handler for {kind!r}")
    job = OutboxJob(kind=kind, payload=payload, dedupe_key=dedupe_key)
    if max_attempts:
        job.max_attempts = max_attempts
    if dedupe_key:
        OutboxJob.objects.bulk_create([job], ignore_conflicts=True)
        job = OutboxJob.objects.get(dedupe_key=dedupe_key)
    else:
        job.save()
    _dispatch_on_commit(job.pk)
    return job


def enqueue_many(kind: str, items: list[tuple[dict, str]]) -> dict[str, OutboxJob]:
    """Record one job per `(payload, dedupe_key)` in the current transaction, in two queries;
    return the jobs by dedupe key. A key already recorded keeps its first job, like `enqueue`.
    """
    if kind not in _handlers:
        raise ValueError(f"no outbox handler for {kind!r}")
    if not items:
        return {}
    OutboxJob.objects.bulk_create(
        [OutboxJob(kind=kind, payload=payload, dedupe_key=key) for payload, key in items],
        ignore_conflicts=True,
    )
    jobs = {
        job.dedupe_key: job
        for job in OutboxJob.objects.filter(dedupe_key__in=[k for _, k in items])
    }
    for job in jobs.values():
        _dispatch_on_commit(job.pk)
    return jobs


def next_delay(attempts: int) -> timedelta:
    return timedelta(seconds=settings.NIGHTSTORM_OUTBOX_BASE_DELAY_S * (2 ** max(0, attempts - 1)))


@operation("platform.outbox_job")
def run_job(job_id: int) -> str | None:
    """Apply one job if it is pending and due; return its new state, or None if skipped."""
    with transaction.atomic():
        job = (
            OutboxJob.objects.select_for_update(skip_locked=True)
            .filter(pk=job_id, state=OutboxJob.State.PENDING, run_after__lte=timezone.now())
            .first()
        )
        if job is None:
            return None  # done, dead, not due, or being run by someone else right now
        fn = _handlers.get(job.kind)
        job.attempts += 1
        now = timezone.now()
        try:
            if fn is None:
                raise LookupError(f"no outbox handler for {job.kind!r}")
            with transaction.atomic():
                fn(job.payload)
        except Exception as exc:
            metrics.TASK_FAILURES.labels(job.kind).inc()
            job.last_error = "".join(traceback.format_exception_only(exc)).strip()[:2000]
            if job.attempts >= job.max_attempts:
                job.state = OutboxJob.State.DEAD
                metrics.OUTBOX_DEAD.labels(job.kind).inc()
                log.error("outbox job %s (%s) is dead: %s", job.pk, job.kind, job.last_error)
            else:
                job.run_after = now + next_delay(job.attempts)
                log.warning("outbox job %s (%s) failed: %s", job.pk, job.kind, job.last_error)
        else:
            job.state = OutboxJob.State.DONE
            job.done_at = now
            job.last_error = ""
        job.updated_at = now
        job.save()
        return job.state


def drain(limit: int = 500) -> dict[str, int]:
    """Run every due pending job (up to `limit`); the periodic safety net behind `enqueue`."""
    due = list(
        OutboxJob.objects.filter(state=OutboxJob.State.PENDING, run_after__lte=timezone.now())
        .order_by("run_after")
        .values_list("pk", flat=True)[:limit]
    )
    counts = {"done": 0, "pending": 0, "dead": 0, "skipped": 0}
    for job_id in due:
        state = run_job(job_id)
        counts[state or "skipped"] += 1
    return counts


def retry_now(job_ids) -> int:
    """Put dead (or pending) jobs back to run at once with a fresh attempt budget."""
    with transaction.atomic():
        ids = list(
            OutboxJob.objects.select_for_update()
            .filter(pk__in=job_ids, state__in=[OutboxJob.State.DEAD, OutboxJob.State.PENDING])
            .values_list("pk", flat=True)
        )
        OutboxJob.objects.filter(pk__in=ids).update(
            state=OutboxJob.State.PENDING,
            attempts=0,
            run_after=timezone.now(),
            updated_at=timezone.now(),
        )
        for job_id in ids:
            _dispatch_on_commit(job_id)
    return len(ids)
