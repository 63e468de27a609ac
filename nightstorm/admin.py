"""Admin for the toolkit's rows, the stale-edit guard every versioned admin uses, the audit
trail every admin action writes, and the platform's dashboard panels."""

from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html

from nightstorm import dashboard, display, health, outbox
from nightstorm.errors import DomainError
from nightstorm.models import Heartbeat, IdempotencyRecord, OutboxJob
from nightstorm.optimistic import update_versioned


def _shown(value) -> str:
    if isinstance(value, datetime):
        return display.stamp(value)
    if value is None or value == "":
        return "—"
    return str(value)


def describe_changes(action: str, changes: dict | None) -> str:
    """`Started the combat: status open → running; turn 0 → 1`: what an audit entry says."""
    parts = [
        f"{name} {_shown(old)} → {_shown(new)}"
        for name, (old, new) in (changes or {}).items()
        if old != new
    ]
    return f"{action}: {'; '.join(parts)}" if parts else action


def audit(request, obj, action: str, changes: dict | None = None) -> None:
    """Record a game master's action on `obj` in Django's admin log (the object's History and
    the Audit log page): who, when, and `{field: (old, new)}` as old → new."""
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=[obj],
        action_flag=CHANGE,
        change_message=describe_changes(action, changes),
        single_object=True,
    )


class AuditedModelAdmin(admin.ModelAdmin):
    """A form save's history entry says old → new for each changed field (Django's own names
    only the fields)."""

    def construct_change_message(self, request, form, formsets, add=False):
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        changes = {}
        for name in form.changed_data:
            if name in ("expected_version", "adjustment_token"):
                continue
            label = form.fields[name].label or name.replace("_", " ")
            changes[str(label)] = (form.initial.get(name), form.cleaned_data.get(name))
        return describe_changes("Changed", changes)


def object_action(label: str, *, confirm: str = "", style: str = ""):
    """Marks a ModelAdmin method `(request, obj) -> message` as a button on the change page;
    it runs on POST only, and a DomainError it raises is shown as the page's error."""

    def decorate(method):
        method.object_action = {"label": label, "confirm": confirm, "style": style}
        return method

    return decorate


class ObjectActionsMixin:
    """Buttons on a change page (start, cancel, open now...) that call one service each.

    `get_object_actions(request, obj)` names the methods to show for `obj` (default: the
    class's `object_actions`); each posts to `<id>/do/<name>/`.
    """

    object_actions: tuple[str, ...] = ()
    change_form_template = "admin/change_form_with_actions.html"

    def get_object_actions(self, request, obj) -> list[str]:
        return list(self.object_actions)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.object_action_view)
        return [
            path("<path:object_id>/do/<str:name>/", view, name="{}_{}_do".format(*info)),
            *super().get_urls(),
        ]

    def object_action_view(self, request, object_id, name):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        if name not in self.get_object_actions(request, obj):
            raise Http404
        try:
            message = getattr(self, name)(request, obj)
        except DomainError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
        else:
            self.message_user(request, message, messages.SUCCESS)
        info = self.opts.app_label, self.opts.model_name
        return redirect(reverse("admin:{}_{}_change".format(*info), args=[quote(obj.pk)]))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            info = self.opts.app_label, self.opts.model_name
            context["object_actions"] = [
                {
                    "name": name,
                    "url": reverse("admin:{}_{}_do".format(*info), args=[quote(obj.pk), name]),
                    **getattr(self, name).object_action,
                }
                for name in self.get_object_actions(request, obj)
            ]
            context["extra_panels"] = self.get_extra_panels(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_extra_panels(self, request, obj) -> list[dict]:
        """Tables shown under the form: `[{"key", "title", "table": dashboard.Table}]`."""
        return []


class DeletedFilter(admin.SimpleListFilter):
    """Live rows by default; soft-deleted ones on demand (to restore them)."""

    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("no", "Live"), ("yes", "Deleted"), ("all", "All")]

    def choices(self, changelist):
        value = self.value() or "no"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "no"
        if value == "all":
            return queryset
        return queryset.filter(deleted_at__isnull=(value == "no"))


class SoftDeleteAdminMixin:
    """Delete hides a `VersionedModel` row (`deleted_at`) and keeps its history; "Restore"
    brings it back. Both leave an audit entry."""

    actions = ["restore"]

    def get_queryset(self, request):
        qs = self.model.all_objects.get_queryset()
        ordering = self.get_ordering(request)
        return qs.order_by(*ordering) if ordering else qs

    def get_list_filter(self, request):
        return (*super().get_list_filter(request), DeletedFilter)

    def get_deleted_objects(self, objs, request):
        # Nothing is removed, so nothing related is lost or protected: the confirmation page
        # lists only the rows to hide.
        objs = list(objs)
        return [str(obj) for obj in objs], {self.opts.verbose_name_plural: len(objs)}, set(), []

    def delete_model(self, request, obj):
        before = obj.deleted_at
        obj.delete()  # a VersionedModel's delete is soft: the row stays, stamped deleted_at
        audit(request, obj, "Deleted (soft; restorable)", {"deleted": (before, obj.deleted_at)})

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            if obj.deleted_at is None:
                self.delete_model(request, obj)

    def log_deletions(self, request, queryset):
        return None  # the soft delete wrote its own entry

    @admin.action(description="Restore the selected deleted rows")
    def restore(self, request, queryset):
        restored = 0
        for obj in queryset.filter(deleted_at__isnull=False):
            version = update_versioned(type(obj), obj.pk, obj.version, deleted_at=None)
            audit(request, obj, "Restored", {"deleted": (obj.deleted_at, None)})
            restored += bool(version)
        self.message_user(request, f"{restored} row(s) restored.", messages.SUCCESS)


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


class LedgerAdmin(ReadOnlyModelAdmin):
    """An append-only ledger's list: when, the signed amount and the balance after it, as
    money (every ledger row has `created_at`, `amount` and `balance_after`)."""

    @admin.display(description="when", ordering="created_at")
    def when(self, entry):
        return display.when(entry.created_at)

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, entry):
        return display.money(entry.amount)

    @admin.display(description="balance after")
    def balance_shown(self, entry):
        return display.money(entry.balance_after)


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


class VersionedModelAdmin(AuditedModelAdmin):
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
        "queued",
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

    @admin.display(description="queued", ordering="created_at")
    def queued(self, job):
        return display.when(job.created_at)

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
                    {"state": (job.state, "pending"), "attempts": (job.attempts, 0)},
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


@dashboard.register("audit", "Audit log (latest)", order=90)
def audit_panel(request):
    entries = LogEntry.objects.select_related("user", "content_type")[:8]
    return dashboard.Table(
        headers=["when", "who", "what"],
        rows=[
            [
                display.when(entry.action_time),
                entry.user.get_username(),
                format_html(
                    "{}: {}",
                    AuditLogAdmin.object_shown(None, entry),
                    entry.get_change_message() or entry.get_action_flag_display(),
                ),
            ]
            for entry in entries
        ],
        empty="No admin action yet.",
        links=[(reverse("admin:admin_logentry_changelist"), "the whole audit log")],
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
