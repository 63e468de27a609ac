"""Admin for the toolkit's rows, the stale-edit guard every versioned admin uses, the audit
trail every admin action writes, and the platform's dashboard panels."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from nightstorm import dashboard, display, health, outbox
from nightstorm.models import Heartbeat, IdempotencyRecord, OutboxJob


def describe_changes(action: str, before: dict, after: dict) -> str:
    """`Started the combat: status open → running; turn 0 → 1`: what an audit entry says."""
    parts = [
        f"{name} {before.get(name, '—')} → {after[name]}"
        for name in after
        if before.get(name) != after[name]
    ]
    return f"{action}: {'; '.join(parts)}" if parts else f"{action} (nothing changed)"


def audit(request, obj, action: str, before: dict | None = None, after: dict | None = None):
    """Record a game master's action on `obj` in Django's admin log (the object's History and
    the Audit log page): who, when, and the old → new values of what it changed."""
    message = describe_changes(action, before or {}, after or {}) if after else action
    return LogEntry.objects.log_actions(
        user_id=request.user.pk, queryset=[obj], action_flag=CHANGE, change_message=message
    )


@admin.register(LogEntry)
class AuditLogAdmin(admin.ModelAdmin):
    """Every admin change and action, newest first: who, on what, old → new."""

    list_display = ("action_time_shown", "user", "object_shown", "action_flag", "message")
    list_filter = ("action_flag", "content_type", "user")
    search_fields = ("object_repr", "change_message", "user__username")
    date_hierarchy = "action_time"
    list_select_related = ("user", "content_type")

    @admin.display(description="when", ordering="action_time")
    def action_time_shown(self, entry):
        return display.when(entry.action_time)

    @admin.display(description="object")
    def object_shown(self, entry):
        kind = entry.content_type.name if entry.content_type else ""
        url = entry.get_admin_url()
        if url:
            return format_html('{}: <a href="{}">{}</a>', kind, url, entry.object_repr)
        return f"{kind}: {entry.object_repr}"

    @admin.display(description="what")
    def message(self, entry):
        return entry.get_change_message()

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Rows that only the services write (ledgers, records): visible, never edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class VersionedAdminForm(forms.ModelForm):
    """Carries the version the editor saw; a save over a newer version is refused.

    The admin's change view runs in one transaction, so `clean()` locks the row while it
    compares versions and the save that follows cannot interleave with another writer.
    """

    expected_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.fields["expected_version"].initial = self.instance.version

    def clean(self):
        cleaned = super().clean()
        if self.instance._state.adding:
            return cleaned
        model = type(self.instance)
        current = (
            model._base_manager.select_for_update()
            .filter(pk=self.instance.pk)
            .values_list("version", flat=True)
            .first()
        )
        seen = cleaned.get("expected_version")
        if current is None:
            raise ValidationError("This row no longer exists.", code="gone")
        if seen != current:
            raise ValidationError(
                f"Someone else changed this row (now version {current}, you opened version "
                f"{seen}). Reload the page to see their change; nothing was saved.",
                code="version_conflict",
            )
        self.instance.version = current + 1
        return cleaned


class VersionedModelAdmin(admin.ModelAdmin):
    """ModelAdmin for `VersionedModel` rows: stale saves fail with a form error."""

    form = VersionedAdminForm

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "version", "created_at", "updated_at")

    def get_fieldsets(self, request, obj=None):
        fieldsets = [(name, dict(opts)) for name, opts in super().get_fieldsets(request, obj)]
        names = [f for _, opts in fieldsets for f in opts.get("fields", ())]
        if "expected_version" not in names:
            first = fieldsets[0][1]
            first["fields"] = [*first.get("fields", ()), "expected_version"]
        return fieldsets

    def save_model(self, request, obj, form, change):
        from django.utils import timezone

        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(OutboxJob)
class OutboxJobAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "kind",
        "state",
        "attempts",
        "max_attempts",
        "run_after_shown",
        "last_error_short",
    )
    list_filter = ("state", "kind")
    search_fields = ("kind", "dedupe_key", "last_error")
    readonly_fields = [f.name for f in OutboxJob._meta.fields]
    actions = ["retry_now"]

    @admin.display(description="last error")
    def last_error_short(self, job):
        return job.last_error[:80]

    @admin.display(description="runs after", ordering="run_after")
    def run_after_shown(self, job):
        return display.when(job.run_after)

    @admin.action(description="Retry now (fresh attempts)")
    def retry_now(self, request, queryset):
        jobs = list(queryset)
        count = outbox.retry_now([job.pk for job in jobs])
        for job in jobs:
            if job.state != OutboxJob.State.DONE:
                audit(
                    request,
                    job,
                    "Retried now",
                    {"state": job.state, "attempts": job.attempts},
                    {"state": OutboxJob.State.PENDING, "attempts": 0},
                )
        self.message_user(request, f"{count} job(s) queued to run now.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyModelAdmin):
    list_display = ("scope", "key", "status_code", "created_at")
    search_fields = ("scope", "key")


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyModelAdmin):
    list_display = ("name", "beat_at_shown")

    @admin.display(description="last beat", ordering="beat_at")
    def beat_at_shown(self, beat):
        return display.when(beat.beat_at)


@dashboard.register("health", "Platform health", order=10)
def health_panel(request):
    status, checks = health.run_checks()
    rows = []
    for name, result in checks.items():
        detail = result.get("reason") or result.get("error") or ""
        if not detail and "age_seconds" in result:
            detail = f"last beat {display.duration(result['age_seconds'])} ago"
        elif not detail and "latency_ms" in result:
            detail = f"{result['latency_ms']} ms"
        rows.append([name.replace("_", " "), result["state"], detail])
    return dashboard.Table(
        headers=["check", "state", "detail"],
        rows=rows,
        state=status,
        links=[(reverse("health"), "/health/ as JSON")],
    )


@dashboard.register("outbox", "Retry queue", order=40)
def outbox_panel(request):
    from django.db.models import Count

    counts = dict(
        OutboxJob.objects.exclude(state=OutboxJob.State.DONE)
        .values_list("state")
        .annotate(n=Count("pk"))
    )
    dead = list(OutboxJob.objects.filter(state=OutboxJob.State.DEAD).order_by("-updated_at")[:5])
    changelist = reverse("admin:nightstorm_outboxjob_changelist")
    return dashboard.Table(
        summary=f"{counts.get('dead', 0)} dead, {counts.get('pending', 0)} pending.",
        headers=["dead job", "attempts", "last error", "since"],
        rows=[
            [
                format_html(
                    '<a href="{}">{}</a>',
                    reverse("admin:nightstorm_outboxjob_change", args=[job.pk]),
                    job.kind,
                ),
                job.attempts,
                job.last_error[:60],
                display.when(job.updated_at),
            ]
            for job in dead
        ],
        empty="No dead jobs.",
        state="degraded" if counts.get("dead") else "ok",
        links=[(f"{changelist}?state__exact=dead", "all dead jobs")],
    )
