"""Admin for the toolkit's rows, and the stale-edit guard every versioned admin uses."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from nightstorm import outbox
from nightstorm.models import Heartbeat, IdempotencyRecord, OutboxJob


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
        "id",
        "kind",
        "state",
        "attempts",
        "max_attempts",
        "run_after",
        "last_error_short",
    )
    list_filter = ("state", "kind")
    search_fields = ("kind", "dedupe_key", "last_error")
    readonly_fields = [f.name for f in OutboxJob._meta.fields]
    actions = ["retry_now"]

    @admin.display(description="last error")
    def last_error_short(self, job):
        return job.last_error[:80]

    @admin.action(description="Retry now (fresh attempts)")
    def retry_now(self, request, queryset):
        count = outbox.retry_now(list(queryset.values_list("pk", flat=True)))
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
    list_display = ("name", "beat_at")
