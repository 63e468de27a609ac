"""Admin for pools (configuration and ledgered adjustments), the ledger and their records.

A pool's amount (the sum of its stripes) is never saved from a form: the page's changes go through
`services.update_config` and `services.adjust_pool`, and "Award a win" through
`services.process_win`, so every change of the amount has its ledger row (and an audit entry).
Amounts are shown as money (minor units formatted), rates as percentages, pools in their order
(minor, major, mega); the ledger filters by date and exports what it shows as CSV.

A stale page is refused with a form error; stale means that the pool's
*configuration* changed since the page was opened (`config_version`), not its balance, so a
game master can save while players bet. The adjustment carries a one-time token rendered into
the form, which becomes its operation id: a double-submitted form adjusts once.
"""

import csv
import re
import threading
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import router
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from game.admin import PlayerAdmin, admin_link
from game.models import Player
from jackpot import services
from jackpot.ledger import audit_pools
from jackpot.models import GROUPS, Contribution, JackpotPool, LedgerEntry, PoolStripe, Win
from nightstorm import dashboard, display
from nightstorm.admin import (
    LedgerAdmin,
    ReadOnlyModelAdmin,
    VersionedAdminForm,
    VersionedModelAdmin,
    audit,
)
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


def _in_pool_order(queryset):
    return queryset.annotate(
        _order=Case(
            *[When(group=g, then=Value(i)) for i, g in enumerate(GROUPS)],
            output_field=IntegerField(),
        )
    ).order_by("_order")


def ledger_url(group: str) -> str:
    return f"{reverse('admin:jackpot_ledgerentry_changelist')}?pool__group__exact={group}"


class AwardWinForm(forms.Form):
    player = forms.CharField(max_length=150, help_text="The winner's player name.")
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def clean_player(self):
        name = self.cleaned_data["player"].strip()
        player = Player.objects.filter(name=name).first()
        if player is None:
            raise ValidationError(f"No player is called {name!r}.")
        return player

    def clean_token(self):
        token = self.cleaned_data["token"]
        if not _TOKEN.fullmatch(token):
            raise ValidationError("This form has no valid token; reload the page.")
        return token


@admin.register(JackpotPool)
class JackpotPoolAdmin(VersionedModelAdmin):
    form = PoolAdminForm
    list_display = (
        "pool",
        "amount_shown",
        "seed_shown",
        "rate_shown",
        "max_shown",
        "config_version",
        "last_modified",
        "ledger_ok",
        "ledger_link",
    )
    list_display_links = ("pool",)
    fields = (
        "group",
        "amount_shown",
        "stripes",
        "seed_amount",
        "contribution_rate_bp",
        "rate_shown",
        "max_amount",
        "adjustment",
        "adjustment_note",
        "adjustment_token",
        "config_version",
        "lock_holder",
        "last_modified",
        "ledger_ok",
        "ledger_link",
    )
    readonly_fields = (
        "group",
        "amount_shown",
        "rate_shown",
        "stripes",
        "config_version",
        "lock_holder",
        "last_modified",
        "ledger_ok",
        "ledger_link",
    )
    change_form_template = "admin/jackpot/jackpotpool/change_form.html"

    def get_queryset(self, request):
        return _in_pool_order(super().get_queryset(request))

    def get_ordering(self, request):
        return ()  # get_queryset orders minor, major, mega

    @admin.display(description="pool")
    def pool(self, pool):
        return pool.get_group_display()

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, pool):
        return display.money(pool.amount)

    @admin.display(description="seed")
    def seed_shown(self, pool):
        return display.money(pool.seed_amount)

    @admin.display(description="contribution rate")
    def rate_shown(self, pool):
        return display.percent_bp(pool.contribution_rate_bp)

    @admin.display(description="maximum")
    def max_shown(self, pool):
        return display.money(pool.max_amount) if pool.max_amount is not None else "no cap"

    @admin.display(description="last change")
    def last_modified(self, pool):
        return display.when(pool.last_modified_at)

    @admin.display(description="ledger")
    def ledger_link(self, pool):
        return format_html('<a href="{}">{} ledger</a>', ledger_url(pool.group), pool.group)

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
            before = pool.amount
            pool = services.adjust_pool(
                group=obj.group,
                delta=form.cleaned_data["adjustment"],
                operation_id=f"admin:{request.user.pk}:{token}",
                note=f"{actor}: {form.cleaned_data.get('adjustment_note') or ''}",
                expected_version=pool.config_version,
            )
            audit(
                request,
                pool,
                "Adjusted the pool",
                {"amount": (display.money(before), display.money(pool.amount))},
            )
        obj.__dict__.update(
            {f.attname: getattr(pool, f.attname) for f in JackpotPool._meta.concrete_fields}
        )

    # "Award a win": the service pays everything the pool holds, once per form token.

    def get_urls(self):
        view = self.admin_site.admin_view(self.award_view)
        return [
            path("<path:object_id>/award/", view, name="jackpot_jackpotpool_award"),
            *super().get_urls(),
        ]

    def award_view(self, request, object_id):
        pool = self.get_object(request, unquote(object_id))
        if pool is None:
            raise Http404
        if not self.has_change_permission(request, pool):
            raise PermissionDenied
        if request.method == "POST":
            form = AwardWinForm(request.POST)
            if form.is_valid():
                player, before = form.cleaned_data["player"], pool.amount
                try:
                    result = services.process_win(
                        group=pool.group,
                        player=player.pk,
                        operation_id=f"admin:{request.user.pk}:{form.cleaned_data['token']}",
                    )
                except DomainError as exc:
                    form.add_error(None, exc.detail)
                else:
                    pool.refresh_from_db()
                    if not result.replayed:
                        audit(
                            request,
                            pool,
                            f"Awarded a win to {player.name}",
                            {
                                "amount": (display.money(before), display.money(pool.amount)),
                                "paid": (None, display.money(result.win.amount)),
                            },
                        )
                    self.message_user(
                        request,
                        f"{player.name} won {display.money(result.win.amount)} from the "
                        f"{pool.group} pool"
                        + (
                            " (this form was already submitted; paid once)."
                            if result.replayed
                            else "."
                        ),
                        messages.SUCCESS,
                    )
                    return redirect(
                        reverse("admin:jackpot_jackpotpool_change", args=[quote(pool.pk)])
                    )
        else:
            form = AwardWinForm(initial={"token": uuid.uuid4().hex})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Award the {pool.group} pool",
            "opts": self.opts,
            "original": pool,
            "pool": pool,
            "amount": display.money(pool.amount),
            "form": form,
        }
        return TemplateResponse(request, "admin/jackpot/jackpotpool/award.html", context)

    def has_add_permission(self, request):
        return False  # the three pools are seeded by a migration

    def has_delete_permission(self, request, obj=None):
        return False


CSV_COLUMNS = (
    "id",
    "created_at",
    "pool",
    "kind",
    "amount",
    "balance_after",
    "pool_version",
    "operation_id",
    "player",
    "note",
)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(LedgerAdmin):
    """The append-only ledger: by pool, kind and date; "Export CSV" writes what the list shows
    (its filters applied), amounts in minor units."""

    list_display = (
        "when",
        "pool",
        "kind",
        "amount_shown",
        "slot",
        "balance_shown",
        "pool_version",
        "operation_id",
        "player_name",
    )
    list_filter = ("pool__group", "kind", ("created_at", admin.DateFieldListFilter))
    date_hierarchy = "created_at"
    search_fields = ("operation_id", "note", "player__name")
    list_select_related = ("pool", "player")
    change_list_template = "admin/jackpot/ledgerentry/change_list.html"

    @admin.display(description="player", ordering="player__name")
    def player_name(self, entry):
        return admin_link(entry.player, entry.player.name) if entry.player else display.EMPTY

    def get_urls(self):
        view = self.admin_site.admin_view(self.export_view)
        return [path("export.csv", view, name="jackpot_ledgerentry_export"), *super().get_urls()]

    def export_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = self.get_changelist_instance(request).get_queryset(request)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="jackpot-ledger-{stamp}.csv"'
        writer = csv.writer(response)
        writer.writerow(CSV_COLUMNS)
        for entry in rows.select_related("pool", "player").iterator(chunk_size=2000):
            writer.writerow(
                [
                    entry.pk,
                    entry.created_at.isoformat(),
                    entry.pool.group,
                    entry.kind,
                    entry.amount,
                    entry.balance_after,
                    entry.pool_version,
                    entry.operation_id,
                    entry.player.name if entry.player else "",
                    entry.note,
                ]
            )
        return response

    def changelist_view(self, request, extra_context=None):
        query = request.GET.urlencode()
        export = reverse("admin:jackpot_ledgerentry_export") + (f"?{query}" if query else "")
        return super().changelist_view(request, {**(extra_context or {}), "export_url": export})


@admin.register(Contribution)
class ContributionAdmin(ReadOnlyModelAdmin):
    list_display = (
        "when",
        "player",
        "bet_shown",
        "minor_shown",
        "major_shown",
        "mega_shown",
        "house_shown",
        "operation_id",
    )
    date_hierarchy = "created_at"
    search_fields = ("operation_id", "player__name")
    list_select_related = ("player",)

    @admin.display(description="when", ordering="created_at")
    def when(self, c):
        return display.when(c.created_at)

    @admin.display(description="bet", ordering="bet")
    def bet_shown(self, c):
        return display.money(c.bet)

    @admin.display(description="to minor")
    def minor_shown(self, c):
        return display.money(c.minor_amount)

    @admin.display(description="to major")
    def major_shown(self, c):
        return display.money(c.major_amount)

    @admin.display(description="to mega")
    def mega_shown(self, c):
        return display.money(c.mega_amount)

    @admin.display(description="to the house")
    def house_shown(self, c):
        return display.money(c.house_amount)


@admin.register(Win)
class WinAdmin(ReadOnlyModelAdmin):
    list_display = ("when", "pool", "player", "amount_shown", "operation_id")
    list_filter = ("pool__group",)
    date_hierarchy = "created_at"
    search_fields = ("operation_id", "player__name")
    list_select_related = ("pool", "player")

    @admin.display(description="when", ordering="created_at")
    def when(self, win):
        return display.when(win.created_at)

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, win):
        return display.money(win.amount)


def bets_panel(player):
    """The player page's "Bets and wins" panel (the game admin knows nothing of jackpots)."""
    bets = Contribution.objects.filter(player=player).order_by("-id")[:10]
    wins = Win.objects.select_related("pool").filter(player=player).order_by("-id")[:5]
    rows = [["bet", display.money(b.bet), display.when(b.created_at)] for b in bets]
    rows += [
        [f"won the {w.pool.group} pool", display.money(w.amount), display.when(w.created_at)]
        for w in wins
    ]
    table = dashboard.Table(
        headers=["what", "amount", "when"],
        rows=rows,
        empty="No bets.",
        links=[
            (
                f"{reverse('admin:jackpot_contribution_changelist')}?q={player.name}",
                "all bets",
            )
        ],
    )
    return "bets", "Bets and jackpot wins", table


PlayerAdmin.panel_builders.append(bets_panel)


@dashboard.register("pools", "Jackpot pools", order=60)
def pools_panel(request):
    audits = {a.group: a for a in audit_pools()}
    pools = list(_in_pool_order(JackpotPool.objects.all()))
    total = sum(p.amount for p in pools)
    broken = [g for g, a in audits.items() if not a.ok]
    return dashboard.Table(
        summary=f"{display.money(total)} in {len(pools)} pools"
        + (f"; ledger mismatch in {', '.join(broken)}!" if broken else "; every ledger balances."),
        headers=["pool", "amount", "rate", "ledger"],
        rows=[
            [
                admin_link(p, p.get_group_display()),
                display.money(p.amount),
                display.percent_bp(p.contribution_rate_bp),
                format_html(
                    '<a href="{}">{}</a>',
                    ledger_url(p.group),
                    "balances" if audits.get(p.group) and audits[p.group].ok else "MISMATCH",
                ),
            ]
            for p in pools
        ],
        state="down" if broken else "ok",
        links=[(reverse("admin:jackpot_ledgerentry_changelist"), "the ledger")],
    )


@admin.register(PoolStripe)
class PoolStripeAdmin(ReadOnlyModelAdmin):
    list_display = ("pool", "slot", "amount", "ceiling", "rate_bp", "version")
    list_filter = ("pool__group",)
    list_select_related = ("pool",)
