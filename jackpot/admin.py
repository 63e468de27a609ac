"""Admin for pools (configuration and ledgered adjustments), the ledger and their records.

A pool's amount (the sum of its stripes) is never saved from a form: the page's changes go
through `services.update_config` and `services.adjust_pool`, so every change of the amount has
its ledger rows. A stale page is refused with a form error; stale means that the pool's
*configuration* changed since the page was opened (`config_version`), not its balance, so a
game master can save while players bet. The adjustment carries a one-time token rendered into
the form, which becomes its operation id: a double-submitted form adjusts once.
"""

import re
import threading
import uuid

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import router

from jackpot import services
from jackpot.ledger import audit_pools
from jackpot.models import Contribution, JackpotPool, LedgerEntry, PoolStripe, Win
from nightstorm.admin import ReadOnlyModelAdmin, VersionedAdminForm, VersionedModelAdmin
from nightstorm.errors import DomainError

_audit = threading.local()


class PoolAdminForm(VersionedAdminForm):
    """Configuration plus an optional signed adjustment, validated as the services will.

    The parent's hidden `expected_version` carries the `config_version` the editor saw here
    (the parent compares `version`, which every bet moves; see `clean`).
    """

    adjustment = forms.IntegerField(
        required=False,
        # The column is a 64-bit integer; larger values could not be stored.
        min_value=-(2**63 - 1),
        max_value=2**63 - 1,
        help_text="Signed minor units to add to the pool, recorded as an adjustment ledger row.",
    )
    adjustment_note = forms.CharField(required=False, max_length=200)
    adjustment_token = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    class Meta:
        model = JackpotPool
        fields = ["seed_amount", "contribution_rate_bp", "max_amount"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            if self.instance.pk:
                self.fields["expected_version"].initial = self.instance.config_version
            self.fields["adjustment_token"].initial = uuid.uuid4().hex

    def clean(self):
        # Lock every pool first, in primary-key order like every other writer (taking this
        # one row alone first could deadlock with a contribution). The admin's change view is
        # one transaction, so the locks hold until the save below has committed.
        alias = router.db_for_write(JackpotPool)  # a locking read: never on a replica
        pools = list(
            JackpotPool.objects.using(alias)
            .select_for_update(of=("self",), no_key=True)
            .order_by("pk")
        )
        # Not VersionedAdminForm.clean: it compares the balance `version`, which live bets
        # move many times a second, so no save would get through while players bet.
        cleaned = forms.ModelForm.clean(self)
        if self.errors:
            return cleaned
        current = next((p for p in pools if p.pk == self.instance.pk), None)
        if current is None:
            raise ValidationError("This row no longer exists.", code="gone")
        seen = cleaned.get("expected_version")
        if seen != current.config_version:
            raise ValidationError(
                "Someone else changed this pool's configuration (now configuration version "
                f"{current.config_version}, you opened version {seen}). Reload the page to see "
                "their change; nothing was saved.",
                code="version_conflict",
            )
        changes = {f: cleaned.get(f) for f in services.CONFIG_FIELDS}
        try:
            services.validate_config(changes, current, [p for p in pools if p.pk != current.pk])
        except DomainError as exc:
            raise ValidationError(exc.detail, code=exc.code) from exc
        delta = cleaned.get("adjustment") or 0
        if current.amount + delta < 0:
            raise ValidationError("The adjustment would take the pool below zero.")
        if current.amount + delta > 2**63 - 1:
            raise ValidationError("The adjustment would take the pool beyond what it can hold.")
        cap = changes["max_amount"]
        if delta > 0 and cap is not None and current.amount + delta > cap:
            raise ValidationError("The adjustment would take the pool above its maximum.")
        if delta and not _TOKEN.fullmatch(cleaned.get("adjustment_token") or ""):
            # Money moves only with a key: without the form's token a resubmission could not
            # be told from a second adjustment.
            raise ValidationError("This form has no valid adjustment token; reload the page.")
        cleaned["current_version"] = current.config_version
        return cleaned


_TOKEN = re.compile(r"[0-9a-f]{32}")


@admin.register(JackpotPool)
class JackpotPoolAdmin(VersionedModelAdmin):
    form = PoolAdminForm
    list_display = (
        "group",
        "amount",
        "seed_amount",
        "contribution_rate_bp",
        "max_amount",
        "version",
        "config_version",
        "lock_holder",
        "last_modified_at",
        "ledger_ok",
    )
    fields = (
        "group",
        "amount",
        "stripes",
        "seed_amount",
        "contribution_rate_bp",
        "max_amount",
        "adjustment",
        "adjustment_note",
        "adjustment_token",
        "config_version",
        "lock_holder",
        "last_modified_at",
        "ledger_ok",
    )
    readonly_fields = (
        "group",
        "amount",
        "stripes",
        "config_version",
        "lock_holder",
        "last_modified_at",
        "ledger_ok",
    )

    @admin.display(description="amount")
    def amount(self, pool):
        """The sum of the pool's stripes (annotated by the pools' default manager)."""
        return pool.amount

    @admin.display(description="stripes")
    def stripes(self, pool):
        amounts = list(pool.stripes.order_by("slot").values_list("amount", flat=True))
        busy = sum(1 for a in amounts if a)
        return f"{len(amounts)} stripes, {busy} holding money"

    def changelist_view(self, request, extra_context=None):
        # One audit query for the whole list (admin instances are shared between threads).
        _audit.by_group = {a.group: a for a in audit_pools()}
        try:
            return super().changelist_view(request, extra_context)
        finally:
            _audit.by_group = None

    @admin.display(description="ledger ok", boolean=True)
    def ledger_ok(self, pool):
        by_group = getattr(_audit, "by_group", None) or {a.group: a for a in audit_pools()}
        result = by_group.get(pool.group)
        return bool(result and result.ok)

    def save_model(self, request, obj, form, change):
        actor = f"admin:{request.user.get_username()}"
        pool = services.update_config(
            group=obj.group,
            changes={f: form.cleaned_data[f] for f in services.CONFIG_FIELDS},
            expected_version=form.cleaned_data["current_version"],
            actor=actor,
        )
        if form.cleaned_data.get("adjustment"):
            # The form's token is the adjustment's key: the same page submitted twice finds
            # its ledger row and adjusts once.
            token = form.cleaned_data["adjustment_token"]
            pool = services.adjust_pool(
                group=obj.group,
                delta=form.cleaned_data["adjustment"],
                operation_id=f"admin:{request.user.pk}:{token}",
                note=f"{actor}: {form.cleaned_data.get('adjustment_note') or ''}",
                expected_version=pool.config_version,
            )
        obj.__dict__.update(
            {f.attname: getattr(pool, f.attname) for f in JackpotPool._meta.concrete_fields}
        )

    def has_add_permission(self, request):
        return False  # the three pools are seeded by a migration

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "pool",
        "kind",
        "amount",
        "slot",
        "balance_after",
        "pool_version",
        "operation_id",
        "player",
        "created_at",
    )
    list_filter = ("pool__group", "kind")
    search_fields = ("operation_id", "note")
    list_select_related = ("pool", "player")
    raw_id_fields = ("player",)


@admin.register(Contribution)
class ContributionAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "operation_id",
        "player",
        "bet",
        "minor_amount",
        "major_amount",
        "mega_amount",
        "house_amount",
        "overflow_amount",
        "created_at",
    )
    search_fields = ("operation_id",)
    list_select_related = ("player",)


@admin.register(Win)
class WinAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "operation_id", "pool", "player", "amount", "created_at")
    list_filter = ("pool__group",)
    search_fields = ("operation_id",)
    list_select_related = ("pool", "player")


@admin.register(PoolStripe)
class PoolStripeAdmin(ReadOnlyModelAdmin):
    list_display = ("pool", "slot", "amount", "ceiling", "rate_bp", "version")
    list_filter = ("pool__group",)
    list_select_related = ("pool",)
