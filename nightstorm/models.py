"""The toolkit's rows: the versioned base model, lock leases and fences, idempotency records,
the outbox (retry queue) and the task cluster's heartbeat."""

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from nightstorm.errors import DomainError


class SoftDeleteQuerySet(models.QuerySet):
    def delete(self):
        """Soft delete: mark the live rows deleted and bump their version, keeping them for
        history. Returns `(count, {label: count})` like Django's delete."""
        now = timezone.now()
        count = self.filter(deleted_at__isnull=True).update(
            deleted_at=now, updated_at=now, version=F("version") + 1
        )
        return count, {self.model._meta.label: count}

    delete.alters_data = True
    delete.queryset_only = True

    def hard_delete(self):
        return super().delete()

    hard_delete.alters_data = True
    hard_delete.queryset_only = True


class LiveManager(models.Manager.from_queryset(SoftDeleteQuerySet)):
    """The default manager: soft-deleted rows are invisible."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True)


class VersionedModel(models.Model):
    """Abstract base for rows changed concurrently.

    `version` grows by one on every change, made through `nightstorm.optimistic` (a conditional
    `UPDATE … WHERE id = %s AND version = %s`) or under a row lock. Deleting is soft and one
    behaviour whichever way it is asked for: `row.delete()` and `queryset.delete()` both stamp
    `deleted_at` and bump the version (`hard_delete()` removes rows for good). `objects` hides
    soft-deleted rows; `all_objects` sees them.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)

    objects = LiveManager()
    all_objects = models.Manager.from_queryset(SoftDeleteQuerySet)()

    class Meta:
        abstract = True
        base_manager_name = "all_objects"

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def delete(self, using=None, keep_parents=False):
        """Soft delete, exactly as `QuerySet.delete()` does it; the instance follows the row."""
        rows = type(self)._base_manager.using(using or self._state.db).filter(pk=self.pk)
        result = rows.delete()
        self.deleted_at, self.updated_at, self.version = rows.values_list(
            "deleted_at", "updated_at", "version"
        ).get()
        return result

    def hard_delete(self, using=None, keep_parents=False):
        return super().delete(using=using, keep_parents=keep_parents)


class LedgerIsAppendOnly(DomainError):
    code = "ledger_append_only"
    status = 405
    detail = "Ledger rows are never changed or deleted."


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses bulk updates and deletes in the ORM; ledgers also refuse them in PostgreSQL
    itself (a django-pgtrigger `Protect` trigger on the concrete model)."""

    def update(self, **kwargs):
        raise LedgerIsAppendOnly()

    def delete(self):
        raise LedgerIsAppendOnly()

    def _raw_delete(self, using):  # the deletion collector's fast path
        raise LedgerIsAppendOnly()


class AppendOnlyModel(models.Model):
    """Abstract base for ledgers: a row is inserted once and never changed or deleted."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise LedgerIsAppendOnly()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise LedgerIsAppendOnly()


class LockLease(models.Model):
    """A distributed-lock lease for the database backend (the embedded default).

    The row outlives its holders so `fence` keeps growing: every grant takes the next value.
    """

    key = models.CharField(max_length=200, primary_key=True)
    owner = models.CharField(max_length=64, blank=True)
    fence = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "nightstorm_lock_lease"

    def __str__(self):
        return self.key


class FenceMark(models.Model):
    """The highest fencing token a guarded resource has accepted a write from."""

    key = models.CharField(max_length=200, primary_key=True)
    fence = models.BigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "nightstorm_fence_mark"

    def __str__(self):
        return f"{self.key}@{self.fence}"


class IdempotencyRecord(models.Model):
    """A claimed Idempotency-Key and, once the request finished, its stored outcome.

    The claim (`claim_token`, `claimed_until`) commits on its own, before the work; the outcome
    (`status_code`, `body`, `headers`) commits with the work. A claim without an outcome whose
    `claimed_until` has passed was left by a request that died: the next request with the key
    takes it over (see `nightstorm.idempotency`).
    """

    scope = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    claim_token = models.CharField(max_length=32, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True)
    # The response as rendered (text, not jsonb): a replay is byte-for-byte the same body,
    # keys in the same order.
    body = models.TextField(blank=True, default="")
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "key"],
                name="%(app_label)s_%(class)s_unique_key",
                violation_error_message="This Idempotency-Key is already recorded.",
            )
        ]

    def __str__(self):
        return f"{self.scope}:{self.key}"


def default_max_attempts() -> int:
    return settings.NIGHTSTORM_OUTBOX_MAX_ATTEMPTS


class OutboxJob(models.Model):
    """A unit of work that must eventually happen, recorded in its cause's transaction.

    Executed by `nightstorm.outbox.run_job` (a django-q2 task), whose handler runs in the same
    transaction that marks the job done: a job is applied once, even if its task runs twice or
    dies halfway. Failures back off; after `max_attempts` the job is dead and waits for a game
    master's "retry now" in the admin.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        DEAD = "dead"

    kind = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=default_max_attempts)
    run_after = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # drain_outbox's scan: due pending jobs only.
            models.Index(
                fields=["run_after"],
                name="nightstorm_outbox_due",
                condition=Q(state="pending"),
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["pending", "done", "dead"]),
                name="%(app_label)s_%(class)s_state_valid",
                violation_error_message="Unknown outbox state.",
            ),
            models.CheckConstraint(
                condition=Q(state="done", done_at__isnull=False) | ~Q(state="done"),
                name="%(app_label)s_%(class)s_done_has_time",
                violation_error_message="A done job records when it was done.",
            ),
        ]

    def __str__(self):
        return f"{self.kind} queued {self.created_at:%Y-%m-%d %H:%M:%S} UTC ({self.state})"


class Heartbeat(models.Model):
    """Last sign of life of a background component (the task cluster beats every minute)."""

    name = models.CharField(max_length=100, primary_key=True)
    beat_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


class StatusReport(models.Model):
    """The latest result of a background check (a schedule audit, a reconciliation), kept so
    the admin and `/health/` can show what the last run found."""

    name = models.CharField(max_length=100, primary_key=True)
    data = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name
