"""Admin for game masters: the world, players, Nightstorms, combats and rewards.

Versioned rows (players, combats) use `VersionedModelAdmin`, so a save over a newer version is
refused with a form error instead of silently overwriting it. State changes of combats go
through the lifecycle services, never through a raw field edit.
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.db.models import F

from game import gold
from game import selectors as storm_selectors
from game.models import (
    Combat,
    CombatTurn,
    GoldEntry,
    Journey,
    NightstormEvent,
    Player,
    Registration,
    Reward,
    Zone,
)
from game.storms import events as nightstorms
from game.storms import firing as storm_tasks
from game.storms import schedules as nightstorm_schedules
from nightstorm import outbox
from nightstorm.admin import ReadOnlyModelAdmin, VersionedAdminForm, VersionedModelAdmin
from nightstorm.models import OutboxJob


@admin.register(Zone)
class ZoneAdmin(admin.ModelAdmin):
    """The world map for game masters: each zone's Nightstorm schedule and its last event.

    The list header shows what the last schedule check changed and anything still wrong.
    """

    list_display = (
        "code",
        "name",
        "region",
        "next_run",
        "last_run",
        "last_event",
        "last_event_state",
    )
    list_filter = ("region",)
    search_fields = ("code", "name", "region")
    actions = ["trigger_now"]
    change_list_template = "admin/game/zone/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(**storm_selectors.zone_storm_annotations())

    @admin.display(description="next Nightstorm", ordering="next_run")
    def next_run(self, zone):
        return zone.next_run

    @admin.display(description="last run")
    def last_run(self, zone):
        if zone.last_run_at is None:
            return "-"
        return f"{zone.last_run_at:%Y-%m-%d %H:%M:%S} ({'ok' if zone.last_run_ok else 'failed'})"

    @admin.display(description="last event", ordering="last_event_slot")
    def last_event(self, zone):
        return zone.last_event_slot

    @admin.display(description="state")
    def last_event_state(self, zone):
        return zone.last_event_state or "-"

    @admin.action(description="Open a Nightstorm now")
    def trigger_now(self, request, queryset):
        for zone in queryset:
            storm_tasks.trigger_now(zone.code)
        self.message_user(
            request, f"Nightstorm opened in {queryset.count()} zone(s).", messages.SUCCESS
        )

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "schedule_report": nightstorm_schedules.last_report(),
            "schedule_problems": nightstorm_schedules.problems(),
        }
        return super().changelist_view(request, extra_context)


class PlayerAdminForm(VersionedAdminForm):
    """Gold is not edited in place: a signed adjustment goes through `game.gold.adjust`, so it
    lands in the gold ledger. The token makes a double-submitted form adjust once."""

    gold_adjustment = forms.IntegerField(
        required=False,
        help_text="Signed amount to add to the player's gold, recorded in the gold ledger.",
    )
    gold_note = forms.CharField(required=False, max_length=150)
    adjustment_token = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.fields["adjustment_token"].initial = uuid.uuid4().hex

    def clean_gold_adjustment(self):
        delta = self.cleaned_data.get("gold_adjustment") or 0
        if delta and self.instance.pk and self.instance.gold + delta < 0:
            raise forms.ValidationError("The adjustment would take the gold below zero.")
        return delta


class GoldEntryInline(admin.TabularInline):
    model = GoldEntry
    fields = ("created_at", "kind", "amount", "balance_after", "reference", "note")
    readonly_fields = fields
    ordering = ("-id",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "gold ledger (newest first)"


@admin.register(Player)
class PlayerAdmin(VersionedModelAdmin):
    form = PlayerAdminForm
    list_display = ("name", "zone", "gold", "hp", "level", "xp", "version")
    list_filter = ("zone__region", "zone")
    search_fields = ("name", "user__username")
    list_select_related = ("zone",)
    raw_id_fields = ("user",)
    readonly_fields = ("gold",)
    inlines = [GoldEntryInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        delta = form.cleaned_data.get("gold_adjustment") or 0
        if delta:
            token = form.cleaned_data.get("adjustment_token") or uuid.uuid4().hex
            gold.adjust(
                player_id=obj.pk,
                delta=delta,
                actor=request.user.get_username(),
                reference=f"admin:{token}",
                note=form.cleaned_data.get("gold_note") or "",
            )


@admin.register(GoldEntry)
class GoldEntryAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "player", "kind", "amount", "balance_after", "reference")
    list_filter = ("kind",)
    search_fields = ("player__name", "reference")
    list_select_related = ("player",)


@admin.register(Journey)
class JourneyAdmin(admin.ModelAdmin):
    list_display = ("player", "origin", "destination", "started_at", "arrives_at", "arrived_at")
    list_filter = (("arrived_at", admin.EmptyFieldListFilter),)
    list_select_related = ("player", "origin", "destination")
    raw_id_fields = ("player",)


class CombatInline(admin.TabularInline):
    model = Combat
    fields = ("index", "status", "capacity", "turn", "outcome")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(NightstormEvent)
class NightstormEventAdmin(admin.ModelAdmin):
    list_display = ("zone", "slot", "state", "registration_closes_at")
    list_filter = ("state", "zone__region")
    date_hierarchy = "slot"
    list_select_related = ("zone",)
    inlines = [CombatInline]
    actions = ["start_now"]

    @admin.action(description="Close registration and start the combats")
    def start_now(self, request, queryset):
        total = {"running": 0, "cancelled": 0}
        for event_id in queryset.values_list("pk", flat=True):
            for key, n in nightstorms.start_event(event_id=event_id).items():
                total[key] += n
        self.message_user(
            request,
            f"{total['running']} combat(s) started, {total['cancelled']} empty one(s) cancelled.",
            messages.SUCCESS,
        )


class RegistrationInline(admin.TabularInline):
    model = Registration
    fields = ("player", "active", "hp", "damage_dealt", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class CombatAdminForm(VersionedAdminForm):
    """Capacity may not drop below the seats already taken (invariant: never more participants
    than capacity). A friendly form error for what the database refuses anyway: the CHECK
    `seats <= capacity` holds whatever a concurrent registration claims in between."""

    def clean(self):
        cleaned = super().clean()
        capacity = cleaned.get("capacity")
        if capacity is not None and not self.instance._state.adding:
            # The row is locked now: take the counter as it is, so the save cannot write back
            # a stale one.
            seats = Combat.objects.filter(pk=self.instance.pk).values_list("seats", flat=True)[0]
            self.instance.seats = seats
            if capacity < seats:
                self.add_error(
                    "capacity", f"{seats} players already hold seats; capacity cannot be lower."
                )
        return cleaned


class CombatTurnInline(admin.TabularInline):
    """The fight turn by turn, as the orchestrator wrote it."""

    model = CombatTurn
    fields = ("turn", "due_at", "ran_at", "boss_hp")
    readonly_fields = fields
    ordering = ("-turn",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "turns (latest first)"


@admin.register(Combat)
class CombatAdmin(VersionedModelAdmin):
    form = CombatAdminForm
    list_display = ("__str__", "zone", "status", "participants", "capacity", "turn", "outcome")
    list_filter = ("status", "outcome", "zone__region")
    list_select_related = ("zone", "event", "event__zone")
    readonly_fields = (
        "event",
        "zone",
        "index",
        "status",
        "seats",
        "turn",
        "boss_hp",
        "boss_max_hp",
        "outcome",
        "next_turn_at",
        "started_at",
        "finished_at",
    )
    inlines = [RegistrationInline, CombatTurnInline]
    actions = ["start_now", "cancel"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_participants=F("seats"))

    @admin.display(description="players", ordering="n_participants")
    def participants(self, combat):
        return combat.n_participants

    def has_add_permission(self, request):
        return False  # combats are opened by Nightstorm events

    @admin.action(description="Start now")
    def start_now(self, request, queryset):
        results = [
            nightstorms.start_combat(combat_id=pk) for pk in queryset.values_list("pk", flat=True)
        ]
        self.message_user(
            request,
            f"{results.count('running')} started, {results.count('cancelled')} cancelled "
            f"(no players), {len(results) - results.count('running') - results.count('cancelled')}"
            " left as they were.",
            messages.SUCCESS,
        )

    @admin.action(description="Cancel")
    def cancel(self, request, queryset):
        results = [
            nightstorms.cancel_combat(combat_id=pk) for pk in queryset.values_list("pk", flat=True)
        ]
        self.message_user(
            request, f"{results.count('cancelled')} combat(s) cancelled.", messages.SUCCESS
        )


class RewardStateFilter(admin.SimpleListFilter):
    title = "payment"
    parameter_name = "payment"

    def lookups(self, request, model_admin):
        return [("pending", "Pending"), ("dead", "Dead (needs a retry)"), ("paid", "Paid")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(paid_at__isnull=True).exclude(job__state=OutboxJob.State.DEAD)
        if self.value() == "dead":
            return queryset.filter(paid_at__isnull=True, job__state=OutboxJob.State.DEAD)
        if self.value() == "paid":
            return queryset.filter(paid_at__isnull=False)
        return queryset


@admin.register(Reward)
class RewardAdmin(admin.ModelAdmin):
    list_display = ("player", "combat", "gold", "xp", "damage_dealt", "paid_at", "job_state")
    list_filter = (RewardStateFilter,)
    list_select_related = ("player", "combat", "job")
    search_fields = ("player__name",)
    readonly_fields = [f.name for f in Reward._meta.fields]
    actions = ["retry"]

    @admin.display(description="job")
    def job_state(self, reward):
        return reward.job.state if reward.job else "-"

    @admin.action(description="Retry payment now")
    def retry(self, request, queryset):
        job_ids = list(
            queryset.filter(paid_at__isnull=True, job__isnull=False).values_list(
                "job_id", flat=True
            )
        )
        count = outbox.retry_now(job_ids)
        self.message_user(request, f"{count} payment(s) queued to run now.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
