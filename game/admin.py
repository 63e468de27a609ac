"""Admin for game masters running a live world: zones and their Nightstorm schedules, events,
combats, players and rewards, plus the game's dashboard panels.

Every change goes through the same services as the API (`game.storms.*`, `game.seats`,
`game.gold`, `game.moderation`, `nightstorm.outbox`) and leaves an audit entry (who, old → new)
in the admin log. What a form must not touch is read-only here: journeys, event state, zone
codes, a player's zone while they travel. Rows with history are never deleted: players and
seatless combats are soft-deleted (and restorable); zones, events, combats with seats and
rewards cannot be deleted at all.
"""

import uuid
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat
from django.http import HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_q.models import Schedule

from game import gold, moderation, seats
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
from game.storms import controls
from game.storms import events as nightstorms
from game.storms import firing as storm_tasks
from game.storms import schedules as nightstorm_schedules
from nightstorm import dashboard, display, outbox
from nightstorm.admin import (
    AuditedModelAdmin,
    LedgerAdmin,
    ObjectActionsMixin,
    ReadOnlyModelAdmin,
    SoftDeleteAdminMixin,
    VersionedAdminForm,
    VersionedModelAdmin,
    audit,
    object_action,
)
from nightstorm.errors import DomainError
from nightstorm.models import OutboxJob


def admin_link(obj, text=None):
    """A link to `obj`'s admin page, labelled with its name (never its id)."""
    if obj is None:
        return display.EMPTY
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else str(obj))


def changelist(model, query: str = "") -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{query}" if query else url


def combat_label(combat: Combat) -> str:
    """`Combat 2 · Ashen Gate · 14:08 UTC`: which fight, where, which Nightstorm."""
    slot = timezone.localtime(combat.event.slot).strftime("%Y-%m-%d %H:%M %Z")
    return f"Combat {combat.index} · {combat.zone.name} · {slot}"


def _changes(before: dict, after: dict) -> dict:
    return {name: (before.get(name), value) for name, value in after.items()}


# --- zones ----------------------------------------------------------------------------------


def _schedule_rows():
    return Schedule.objects.filter(
        name=Concat(Value(nightstorm_schedules.PREFIX), OuterRef("code"))
    )


def _watchdog_lines(zone_code: str | None = None) -> list[str]:
    report = nightstorm_schedules.last_report() or {}
    # Creations are counted, not listed: a fresh database creates all 81. Repairs are what a
    # game master must see (a hand-edited schedule put back), and deletions.
    lines = [*report.get("repaired", []), *report.get("deleted", []), *report.get("game", [])]
    if zone_code:
        lines = [
            line for line in lines if line.startswith(f"{nightstorm_schedules.PREFIX}{zone_code}:")
        ]
    return lines


@admin.register(Zone)
class ZoneAdmin(ObjectActionsMixin, AuditedModelAdmin):
    """The world map: each zone's Nightstorm schedule and its latest event. The list header
    shows what the last schedule check (the watchdog) repaired, and anything still wrong."""

    list_display = (
        "zone",
        "region",
        "next_run_shown",
        "schedule_state",
        "last_run",
        "last_event",
    )
    list_filter = ("region",)
    search_fields = ("code", "name", "region", "boss_name")
    actions = ["trigger_now", "skip_next_selected", "pause_selected", "resume_selected"]
    change_list_template = "admin/game/zone/change_list.html"
    fields = ("code", "name", "region", "boss_name", "boss_hp", "boss_attack")

    def get_readonly_fields(self, request, obj=None):
        return ("code",) if obj else ()  # codes name schedules and appear in the API

    def has_add_permission(self, request):
        return False  # the 81 zones are seeded (manage.py seed_world)

    def has_delete_permission(self, request, obj=None):
        return False  # players, events and schedules refer to a zone

    def changelist_view(self, request, extra_context=None):
        report = nightstorm_schedules.last_report()
        extra_context = {
            **(extra_context or {}),
            "schedule_report": report,
            "schedule_checked": display.when(datetime.fromisoformat(report["checked_at"]))
            if report
            else "",
            "schedule_problems": nightstorm_schedules.problems(),
        }
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                **storm_selectors.zone_storm_annotations(),
                schedule_repeats=Subquery(_schedule_rows().values("repeats")[:1]),
            )
        )

    @admin.display(description="zone", ordering="code")
    def zone(self, zone):
        return f"{zone.name} ({zone.code})"

    @admin.display(description="next Nightstorm", ordering="next_run")
    def next_run_shown(self, zone):
        return display.when(zone.next_run)

    @admin.display(description="schedule")
    def schedule_state(self, zone):
        if zone.schedule_repeats is None:
            return "missing"
        return "paused" if zone.schedule_repeats == nightstorm_schedules.PAUSED_REPEATS else "on"

    @admin.display(description="last run")
    def last_run(self, zone):
        if zone.last_run_at is None:
            return display.EMPTY
        outcome = "ok" if zone.last_run_ok else "failed"
        return format_html("{} {}", display.when(zone.last_run_at), outcome)

    @admin.display(description="latest Nightstorm", ordering="last_event_slot")
    def last_event(self, zone):
        if zone.last_event_slot is None:
            return display.EMPTY
        return format_html("{} {}", display.when(zone.last_event_slot), zone.last_event_state)

    # Actions on the list and buttons on the page: the same services, each one audited.

    def _open_now(self, request, zone) -> NightstormEvent:
        event = NightstormEvent.objects.select_related("zone").get(
            pk=storm_tasks.trigger_now(zone.code)
        )
        audit(request, zone, "Opened a Nightstorm now", {"Nightstorm": (None, str(event))})
        return event

    def _skip(self, request, zone):
        audit(request, zone, "Skipped the next Nightstorm", controls.skip_next(zone_code=zone.code))

    def _pause(self, request, zone):
        audit(request, zone, "Paused the Nightstorms", controls.pause(zone_code=zone.code))

    def _resume(self, request, zone):
        audit(request, zone, "Resumed the Nightstorms", controls.resume(zone_code=zone.code))

    @admin.action(description="Open a Nightstorm now")
    def trigger_now(self, request, queryset):
        for zone in queryset:
            self._open_now(request, zone)
        self.message_user(
            request, f"Nightstorm opened in {queryset.count()} zone(s).", messages.SUCCESS
        )

    @admin.action(description="Skip the next Nightstorm")
    def skip_next_selected(self, request, queryset):
        for zone in queryset:
            self._skip(request, zone)
        self.message_user(request, f"Skipped in {queryset.count()} zone(s).", messages.SUCCESS)

    @admin.action(description="Pause the Nightstorms")
    def pause_selected(self, request, queryset):
        for zone in queryset:
            self._pause(request, zone)
        self.message_user(request, f"Paused in {queryset.count()} zone(s).", messages.SUCCESS)

    @admin.action(description="Resume the Nightstorms")
    def resume_selected(self, request, queryset):
        for zone in queryset:
            self._resume(request, zone)
        self.message_user(request, f"Resumed in {queryset.count()} zone(s).", messages.SUCCESS)

    def get_object_actions(self, request, obj):
        row = nightstorm_schedules.zone_schedules().get(obj.code)
        paused = row is not None and nightstorm_schedules.is_paused(row)
        return ["open_now", "skip_next", "resume" if paused else "pause"]

    @object_action("Open a Nightstorm now")
    def open_now(self, request, zone):
        return f"Opened {self._open_now(request, zone)}."

    @object_action("Skip the next Nightstorm")
    def skip_next(self, request, zone):
        self._skip(request, zone)
        return f"The next Nightstorm in {zone.name} is skipped."

    @object_action("Pause", confirm="No Nightstorm will open in this zone until you resume.")
    def pause(self, request, zone):
        self._pause(request, zone)
        return f"Nightstorms in {zone.name} are paused."

    @object_action("Resume")
    def resume(self, request, zone):
        self._resume(request, zone)
        return f"Nightstorms in {zone.name} resume."

    def get_extra_panels(self, request, zone):
        row = nightstorm_schedules.zone_schedules().get(zone.code)
        schedule = dashboard.Table(
            headers=["", ""],
            rows=[
                ["next Nightstorm", display.when(row.next_run) if row else "no schedule"],
                [
                    "state",
                    "paused"
                    if row and nightstorm_schedules.is_paused(row)
                    else ("on" if row else "missing"),
                ],
                ["every", f"{row.minutes} min" if row else display.EMPTY],
                ["storm boss", f"{zone.boss_name} ({zone.boss_hp} hp, attack {zone.boss_attack})"],
            ],
        )
        repairs = _watchdog_lines(zone.code)
        if repairs:
            schedule.summary = "Last schedule check: " + "; ".join(repairs)
        events = storm_selectors.nightstorm_events().filter(zone=zone)[:10]
        recent = dashboard.Table(
            headers=["Nightstorm", "state", "registration closes", "combats (players)"],
            rows=[
                [
                    admin_link(event, display.stamp(event.slot)),
                    event.state,
                    display.when(event.registration_closes_at),
                    ", ".join(
                        f"{c.index}: {c.status} ({c.participant_count}/{c.capacity})"
                        for c in event.combats.all()
                    ),
                ]
                for event in events
            ],
            empty="No Nightstorm yet.",
            links=[(changelist(NightstormEvent, f"zone__id__exact={zone.pk}"), "all of them")],
        )
        return [
            {"key": "schedule", "title": "Schedule", "table": schedule},
            {"key": "recent-events", "title": "Recent Nightstorms", "table": recent},
        ]


# --- players --------------------------------------------------------------------------------


class PlayerAdminForm(VersionedAdminForm):
    """Gold is not edited in place: a signed adjustment goes through `game.gold.adjust`, so it
    lands in the gold ledger. The token makes a double-submitted form adjust once."""

    gold_adjustment = forms.IntegerField(
        required=False,
        help_text="Signed amount (minor units) to add to the player's gold, recorded in the "
        "gold ledger.",
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
    fields = ("when", "kind", "amount_shown", "balance_shown", "reference", "note")
    readonly_fields = fields
    ordering = ("-id",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "gold ledger (newest first)"

    @admin.display(description="when")
    def when(self, entry):
        return display.when(entry.created_at)

    @admin.display(description="amount")
    def amount_shown(self, entry):
        if entry.amount is None:
            return display.EMPTY
        return f"{'+' if entry.amount > 0 else ''}{display.money(entry.amount)}"

    @admin.display(description="balance after")
    def balance_shown(self, entry):
        return display.money(entry.balance_after)


def _in_flight(player) -> Journey | None:
    return (
        Journey.objects.select_related("origin", "destination")
        .filter(player=player, arrived_at__isnull=True)
        .first()
    )


@admin.register(Player)
class PlayerAdmin(ObjectActionsMixin, SoftDeleteAdminMixin, VersionedModelAdmin):
    """A player's page: their journey, seat, rewards, bets (added by the jackpot admin) and gold
    ledger; suspend the account or revoke its API token."""

    form = PlayerAdminForm
    list_display = (
        "name",
        "username",
        "zone_shown",
        "travel",
        "gold_shown",
        "hp",
        "level",
        "account",
    )
    list_filter = ("user__is_active", "zone__region")
    search_fields = ("name", "user__username", "zone__name", "zone__code")
    list_select_related = ("zone", "user")
    fields = (
        "name",
        "account_shown",
        "zone",
        "hp",
        "level",
        "xp",
        "gold_shown",
        "gold_adjustment",
        "gold_note",
        "adjustment_token",
    )
    inlines = [GoldEntryInline]
    # Panels other apps add to the page: `build(player) -> (key, title, dashboard.Table)`.
    panel_builders: list = []

    def has_add_permission(self, request):
        return False  # players come with their accounts (POST /api/v1/auth/register/)

    def get_readonly_fields(self, request, obj=None):
        fields = [*super().get_readonly_fields(request, obj), "account_shown", "gold_shown"]
        if obj is not None and _in_flight(obj):
            fields.append("zone")  # mid-journey the zone is the travel service's
        return fields

    def get_queryset(self, request):
        in_flight = Journey.objects.filter(player=OuterRef("pk"), arrived_at__isnull=True)
        return (
            super()
            .get_queryset(request)
            .annotate(
                heading_to=Subquery(in_flight.values("destination__name")[:1]),
                arrives_at=Subquery(in_flight.values("arrives_at")[:1]),
            )
        )

    @admin.display(description="username", ordering="user__username")
    def username(self, player):
        return player.user.username

    @admin.display(description="zone", ordering="zone__name")
    def zone_shown(self, player):
        return player.zone.name if player.zone else display.EMPTY

    @admin.display(description="travelling")
    def travel(self, player):
        if not getattr(player, "heading_to", None):
            return display.EMPTY
        return format_html("to {}, arrives {}", player.heading_to, display.when(player.arrives_at))

    @admin.display(description="gold", ordering="gold")
    def gold_shown(self, player):
        return display.money(player.gold)

    @admin.display(description="account", ordering="user__is_active", boolean=False)
    def account(self, player):
        if player.deleted_at:
            return "deleted"
        return "active" if player.user.is_active else "suspended"

    @admin.display(description="account")
    def account_shown(self, player):
        return format_html(
            "{} ({}), joined {}",
            player.user.username,
            self.account(player),
            display.when(player.user.date_joined),
        )

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

    def get_object_actions(self, request, obj):
        return ["reinstate" if not obj.user.is_active else "suspend", "revoke_token"]

    @object_action("Suspend", confirm="The player can no longer log in or use the API.")
    def suspend(self, request, player):
        audit(request, player, "Suspended", moderation.suspend(player_id=player.pk))
        return f"{player.name} is suspended; their API token is revoked."

    @object_action("Reinstate")
    def reinstate(self, request, player):
        audit(request, player, "Reinstated", moderation.reinstate(player_id=player.pk))
        return f"{player.name} can log in again."

    @object_action("Revoke API token", confirm="The player's game client must log in again.")
    def revoke_token(self, request, player):
        audit(
            request, player, "Revoked the API token", moderation.revoke_token(player_id=player.pk)
        )
        return f"{player.name}'s API token is revoked."

    def get_extra_panels(self, request, player):
        journeys = Journey.objects.select_related("origin", "destination").filter(player=player)
        journey = dashboard.Table(
            headers=["from", "to", "left", "arrives / arrived"],
            rows=[
                [
                    j.origin.name if j.origin else display.EMPTY,
                    j.destination.name,
                    display.when(j.started_at),
                    display.when(j.arrived_at)
                    if j.arrived_at
                    else format_html("<strong>in flight</strong>, {}", display.when(j.arrives_at)),
                ]
                for j in journeys[:5]
            ],
            empty="Never travelled.",
        )
        seated = (
            Registration.objects.select_related("combat__event", "combat__zone")
            .filter(player=player)
            .order_by("-created_at")[:5]
        )
        seat = dashboard.Table(
            headers=["combat", "status", "hp", "damage", "seated"],
            rows=[
                [
                    admin_link(r.combat, combat_label(r.combat)),
                    r.combat.status + (" (active seat)" if r.active else ""),
                    r.hp if r.combat.status != Combat.Status.OPEN else f"{player.hp} (enters with)",
                    r.damage_dealt,
                    display.when(r.created_at),
                ]
                for r in seated
            ],
            empty="Never seated.",
        )
        rewards = (
            Reward.objects.select_related("combat__event", "combat__zone", "job")
            .filter(player=player)
            .order_by("-created_at")[:10]
        )
        reward = dashboard.Table(
            headers=["combat", "gold", "xp", "payment"],
            rows=[
                [
                    admin_link(r.combat, combat_label(r.combat)),
                    display.money(r.gold),
                    r.xp,
                    admin_link(r, _payment(r)),
                ]
                for r in rewards
            ],
            empty="No rewards yet.",
            links=[(changelist(Reward, f"player__id__exact={player.pk}"), "all rewards")],
        )
        panels = [
            {"key": "journey", "title": "Journeys (latest first)", "table": journey},
            {"key": "seat", "title": "Seats (latest first)", "table": seat},
            {"key": "rewards", "title": "Rewards", "table": reward},
        ]
        for build in self.panel_builders:
            key, title, table = build(player)
            panels.append({"key": key, "title": title, "table": table})
        return panels


@admin.register(GoldEntry)
class GoldEntryAdmin(LedgerAdmin):
    list_display = ("when", "player", "kind", "amount_shown", "balance_shown", "reference")
    list_filter = ("kind",)
    date_hierarchy = "created_at"
    search_fields = ("player__name", "reference")
    list_select_related = ("player",)


@admin.register(Journey)
class JourneyAdmin(ReadOnlyModelAdmin):
    """Journeys are the travel service's: started by the API, landed by `apply_arrivals`."""

    list_display = ("player", "origin_name", "destination_name", "left", "arrives", "arrived")
    list_filter = (("arrived_at", admin.EmptyFieldListFilter),)
    search_fields = ("player__name",)
    list_select_related = ("player", "origin", "destination")

    @admin.display(description="from")
    def origin_name(self, journey):
        return journey.origin.name if journey.origin else display.EMPTY

    @admin.display(description="to", ordering="destination__name")
    def destination_name(self, journey):
        return journey.destination.name

    @admin.display(description="left", ordering="started_at")
    def left(self, journey):
        return display.when(journey.started_at)

    @admin.display(description="arrives", ordering="arrives_at")
    def arrives(self, journey):
        return display.when(journey.arrives_at)

    @admin.display(description="arrived", ordering="arrived_at")
    def arrived(self, journey):
        return display.when(journey.arrived_at)


# --- Nightstorms and combats ----------------------------------------------------------------


class CombatInline(admin.TabularInline):
    model = Combat
    fields = ("combat", "status", "players", "turn", "boss", "outcome")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_players=Count("registrations"))

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="combat")
    def combat(self, combat):
        return admin_link(combat, f"Combat {combat.index}") if combat.pk else display.EMPTY

    @admin.display(description="players")
    def players(self, combat):
        return f"{getattr(combat, 'n_players', 0)} / {combat.capacity}"

    @admin.display(description="storm boss hp")
    def boss(self, combat):
        return f"{combat.boss_hp} / {combat.boss_max_hp}"


@admin.register(NightstormEvent)
class NightstormEventAdmin(ObjectActionsMixin, admin.ModelAdmin):
    """Events are opened by the schedules (or "open now" on a zone) and moved on by the
    orchestrator; here nothing is edited by hand, only started early."""

    list_display = ("nightstorm", "zone_name", "slot_shown", "state", "closes", "seats")
    list_filter = ("state", "zone__region")
    search_fields = ("zone__name", "zone__code")
    date_hierarchy = "slot"
    list_select_related = ("zone",)
    fields = ("zone", "slot_shown", "state", "closes")
    readonly_fields = fields
    inlines = [CombatInline]
    actions = ["start_now"]
    object_actions = ("start_event_now",)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_players=Count("combats__registrations"),
                n_seats=Count("combats", distinct=True),
            )
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # its combats, seats and rewards refer to it

    @admin.display(description="Nightstorm", ordering="slot")
    def nightstorm(self, event):
        return str(event)

    @admin.display(description="zone", ordering="zone__name")
    def zone_name(self, event):
        return admin_link(event.zone, event.zone.name)

    @admin.display(description="slot", ordering="slot")
    def slot_shown(self, event):
        return display.when(event.slot)

    @admin.display(description="registration closes", ordering="registration_closes_at")
    def closes(self, event):
        return display.when(event.registration_closes_at)

    @admin.display(description="players")
    def seats(self, event):
        return f"{event.n_players} in {event.n_seats} combat(s)"

    def _start(self, request, event) -> dict:
        counts = nightstorms.start_event(event_id=event.pk)
        after = NightstormEvent.objects.get(pk=event.pk).state
        audit(
            request,
            event,
            "Started now",
            {
                "state": (event.state, after),
                "combats started": (0, counts["running"]),
                "empty combats cancelled": (0, counts["cancelled"]),
            },
        )
        return counts

    @admin.action(description="Close registration and start the combats")
    def start_now(self, request, queryset):
        total = {"running": 0, "cancelled": 0}
        for event in queryset.select_related("zone"):
            for key, n in self._start(request, event).items():
                total[key] += n
        self.message_user(
            request,
            f"{total['running']} combat(s) started, {total['cancelled']} empty one(s) cancelled.",
            messages.SUCCESS,
        )

    def get_object_actions(self, request, obj):
        return [] if obj.state == NightstormEvent.State.FINISHED else ["start_event_now"]

    @object_action("Close registration and start", confirm="Start every combat of it now?")
    def start_event_now(self, request, event):
        counts = self._start(request, event)
        return f"{counts['running']} combat(s) started, {counts['cancelled']} empty cancelled."


class CombatAdminForm(VersionedAdminForm):
    """Capacity may not drop below the seats already taken (invariant: never more participants
    than capacity). A friendly form error for what the database refuses anyway: the CHECK
    `seats <= capacity` holds whatever a concurrent registration claims in between."""

    def clean(self):
        cleaned = super().clean()
        capacity = cleaned.get("capacity")
        if capacity is not None and not self.instance._state.adding:
            # The row is locked now: take the counter as it is (the number of seats), so the
            # save cannot write back a stale one.
            taken = Combat.objects.filter(pk=self.instance.pk).values_list("seats", flat=True)[0]
            self.instance.seats = taken
            if capacity < taken:
                self.add_error(
                    "capacity", f"{taken} players already hold seats; capacity cannot be lower."
                )
        return cleaned


class CombatTurnInline(admin.TabularInline):
    """The fight turn by turn, as the orchestrator wrote it."""

    model = CombatTurn
    fields = ("turn", "due", "ran", "late", "boss_hp")
    readonly_fields = fields
    ordering = ("-turn",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "turn log (latest first)"

    @admin.display(description="due")
    def due(self, turn):
        return display.stamp(turn.due_at)

    @admin.display(description="ran")
    def ran(self, turn):
        return display.stamp(turn.ran_at)

    @admin.display(description="late by")
    def late(self, turn):
        if turn.ran_at is None or turn.due_at is None:
            return display.EMPTY
        return f"{(turn.ran_at - turn.due_at).total_seconds():.2f} s"


@admin.register(Combat)
class CombatAdmin(ObjectActionsMixin, SoftDeleteAdminMixin, VersionedModelAdmin):
    """One fight: its seats (remove a player while it is open), its turn log, start and cancel
    buttons. Only the capacity is edited in the form."""

    form = CombatAdminForm
    list_display = (
        "combat",
        "zone_name",
        "slot",
        "status",
        "players",
        "turn",
        "boss",
        "outcome",
    )
    list_filter = ("status", "outcome", "zone__region")
    search_fields = ("zone__name", "zone__code")
    list_select_related = ("zone", "event", "event__zone")
    fields = (
        "nightstorm",
        "status",
        "capacity",
        "turn",
        "boss",
        "outcome",
        "next_turn",
        "started",
        "finished",
    )
    readonly_fields = (
        "nightstorm",
        "status",
        "turn",
        "boss",
        "outcome",
        "next_turn",
        "started",
        "finished",
    )
    inlines = [CombatTurnInline]
    actions = ["start_now", "cancel", "restore"]

    def has_add_permission(self, request):
        return False  # combats are opened by Nightstorm events

    def has_delete_permission(self, request, obj=None):
        if obj is not None and Registration.objects.filter(combat=obj).exists():
            return False  # seats, turns and rewards refer to it
        return super().has_delete_permission(request, obj)

    @admin.display(description="combat", ordering="index")
    def combat(self, combat):
        return f"Combat {combat.index}"

    @admin.display(description="zone", ordering="zone__name")
    def zone_name(self, combat):
        return combat.zone.name

    @admin.display(description="Nightstorm", ordering="event__slot")
    def slot(self, combat):
        return display.when(combat.event.slot)

    @admin.display(description="Nightstorm")
    def nightstorm(self, combat):
        return admin_link(combat.event)

    @admin.display(description="players", ordering="seats")
    def players(self, combat):
        return f"{combat.seats} / {combat.capacity}"

    @admin.display(description="storm boss hp")
    def boss(self, combat):
        return f"{combat.boss_hp} / {combat.boss_max_hp}"

    @admin.display(description="next turn")
    def next_turn(self, combat):
        return display.when(combat.next_turn_at)

    @admin.display(description="started")
    def started(self, combat):
        return display.when(combat.started_at)

    @admin.display(description="finished")
    def finished(self, combat):
        return display.when(combat.finished_at)

    def _start(self, request, combat) -> str:
        status = nightstorms.start_combat(combat_id=combat.pk)
        audit(request, combat, "Started now", {"status": (combat.status, status)})
        return status

    def _cancel(self, request, combat) -> str:
        status = nightstorms.cancel_combat(combat_id=combat.pk)
        audit(request, combat, "Cancelled", {"status": (combat.status, status)})
        return status

    @admin.action(description="Start now")
    def start_now(self, request, queryset):
        results = [self._start(request, combat) for combat in queryset]
        self.message_user(
            request,
            f"{results.count('running')} started, {results.count('cancelled')} cancelled "
            f"(no players), {len(results) - results.count('running') - results.count('cancelled')}"
            " left as they were.",
            messages.SUCCESS,
        )

    @admin.action(description="Cancel")
    def cancel(self, request, queryset):
        results = [self._cancel(request, combat) for combat in queryset]
        self.message_user(
            request, f"{results.count('cancelled')} combat(s) cancelled.", messages.SUCCESS
        )

    def get_object_actions(self, request, obj):
        actions = []
        if obj.status == Combat.Status.OPEN:
            actions.append("start_combat_now")
        if obj.status in (Combat.Status.OPEN, Combat.Status.RUNNING):
            actions.append("cancel_combat")
        return actions

    @object_action("Start now")
    def start_combat_now(self, request, combat):
        status = self._start(request, combat)
        if status == Combat.Status.CANCELLED:
            return "Nobody had a seat: the combat was cancelled."
        return f"The combat is {status}."

    @object_action("Cancel", confirm="Cancel this combat? Nobody is rewarded.", style="danger")
    def cancel_combat(self, request, combat):
        return f"The combat is {self._cancel(request, combat)}."

    def object_action_view(self, request, object_id, name):
        if name == "remove_player":
            return self._remove_player_view(request, object_id)
        return super().object_action_view(request, object_id, name)

    def _remove_player_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        combat = self.get_object(request, unquote(object_id))
        if combat is None or not self.has_change_permission(request, combat):
            raise PermissionDenied
        player = Player.all_objects.filter(pk=request.POST.get("remove_player")).first()
        if player is None:
            self.message_user(request, "No such player.", messages.ERROR)
        else:
            try:
                changes = seats.remove_player(combat_id=combat.pk, player_id=player.pk)
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                audit(request, combat, f"Removed {player.name}", changes)
                self.message_user(request, f"{player.name} no longer has a seat.", messages.SUCCESS)
        return redirect(reverse("admin:game_combat_change", args=[quote(combat.pk)]))

    def get_extra_panels(self, request, combat):
        seated = Registration.objects.select_related("player").filter(combat=combat)
        is_open = combat.status == Combat.Status.OPEN
        remove_url = reverse("admin:game_combat_do", args=[quote(combat.pk), "remove_player"])
        rows = []
        for seat in seated:
            # Before the start a seat's hp is not set yet: the player enters with theirs.
            hp = f"{seat.player.hp} (enters with)" if is_open else seat.hp
            row = [
                admin_link(seat.player, seat.player.name),
                hp,
                seat.damage_dealt,
                "in the fight" if seat.active else "left / ended",
                display.when(seat.created_at),
            ]
            if is_open:
                row.append(
                    format_html(
                        '<button type="submit" class="button" formaction="{}" '
                        'name="remove_player" value="{}">Remove</button>',
                        remove_url,
                        seat.player.pk,
                    )
                )
            rows.append(row)
        headers = ["player", "hp", "damage dealt", "seat", "seated"]
        table = dashboard.Table(
            summary=f"{len(rows)} of {combat.capacity} seats taken.",
            headers=[*headers, ""] if is_open else headers,
            rows=rows,
            empty="Nobody has a seat yet.",
        )
        return [{"key": "seats", "title": "Players", "table": table}]


# --- rewards --------------------------------------------------------------------------------


def _payment(reward: Reward) -> str:
    if reward.paid_at:
        return f"paid {display.stamp(reward.paid_at)}"
    if reward.job and reward.job.state == OutboxJob.State.DEAD:
        return "dead (needs a retry)"
    return "pending"


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
class RewardAdmin(ObjectActionsMixin, admin.ModelAdmin):
    list_display = ("player", "combat_shown", "gold_shown", "xp", "damage_dealt", "payment")
    list_filter = (RewardStateFilter,)
    list_select_related = ("player", "combat__event", "combat__zone", "job")
    search_fields = ("player__name",)
    fields = (
        "player",
        "combat_shown",
        "gold_shown",
        "xp",
        "damage_dealt",
        "created",
        "payment",
        "last_error",
    )
    readonly_fields = fields
    actions = ["retry"]

    @admin.display(description="combat")
    def combat_shown(self, reward):
        return admin_link(reward.combat, combat_label(reward.combat))

    @admin.display(description="gold", ordering="gold")
    def gold_shown(self, reward):
        return display.money(reward.gold)

    @admin.display(description="written")
    def created(self, reward):
        return display.when(reward.created_at)

    @admin.display(description="payment")
    def payment(self, reward):
        return _payment(reward)

    @admin.display(description="last error")
    def last_error(self, reward):
        return reward.job.last_error if reward.job else display.EMPTY

    def _retry(self, request, rewards) -> int:
        rewards = [r for r in rewards if r.paid_at is None and r.job is not None]
        count = outbox.retry_now([r.job_id for r in rewards])
        for reward in rewards:
            audit(
                request,
                reward,
                "Retried the payment",
                {"job": (reward.job.state, "pending"), "attempts": (reward.job.attempts, 0)},
            )
        return count

    @admin.action(description="Retry payment now")
    def retry(self, request, queryset):
        count = self._retry(request, list(queryset.select_related("job")))
        self.message_user(request, f"{count} payment(s) queued to run now.", messages.SUCCESS)

    def get_object_actions(self, request, obj):
        return [] if obj.paid_at or obj.job is None else ["retry_payment"]

    @object_action("Retry payment now")
    def retry_payment(self, request, reward):
        return f"{self._retry(request, [reward])} payment queued to run now."

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- dashboard ------------------------------------------------------------------------------


@dashboard.register("next-nightstorms", "Next Nightstorms", order=20)
def next_nightstorms_panel(request):
    upcoming = (
        Schedule.objects.filter(name__startswith=nightstorm_schedules.PREFIX)
        .exclude(repeats=nightstorm_schedules.PAUSED_REPEATS)
        .exclude(next_run=None)
        .order_by("next_run")[:8]
    )
    codes = {row.name.removeprefix(nightstorm_schedules.PREFIX): row for row in upcoming}
    zones = Zone.objects.in_bulk(list(codes), field_name="code")
    paused = Schedule.objects.filter(
        name__startswith=nightstorm_schedules.PREFIX, repeats=nightstorm_schedules.PAUSED_REPEATS
    ).count()
    open_events = NightstormEvent.objects.filter(state=NightstormEvent.State.OPEN).count()
    return dashboard.Table(
        summary=f"{open_events} Nightstorm(s) taking registrations now; {paused} zone(s) paused.",
        headers=["zone", "region", "when"],
        rows=[
            [
                admin_link(zones[code], zones[code].name) if code in zones else code,
                zones[code].region if code in zones else "",
                display.when(row.next_run),
            ]
            for code, row in codes.items()
        ],
        empty="No schedule yet: run manage.py ensure_schedules or start the task cluster.",
        links=[(changelist(Zone, "o=3"), "zones by next Nightstorm")],
    )


@dashboard.register("running-combats", "Running combats", order=30)
def running_combats_panel(request):
    running = (
        Combat.objects.filter(status=Combat.Status.RUNNING)
        .select_related("zone", "event")
        .annotate(n=Count("registrations", filter=Q(registrations__active=True)))
        .order_by("started_at")
    )
    total = running.count()
    open_seats = Combat.objects.filter(status=Combat.Status.OPEN).aggregate(
        combats=Count("pk", distinct=True), players=Count("registrations")
    )
    return dashboard.Table(
        summary=f"{total} running; {open_seats['combats']} open with "
        f"{open_seats['players']} player(s) waiting.",
        headers=["combat", "players", "turn", "storm boss hp", "started"],
        rows=[
            [
                admin_link(c, f"Combat {c.index} · {c.zone.name}"),
                c.n,
                c.turn,
                f"{c.boss_hp} / {c.boss_max_hp}",
                display.when(c.started_at),
            ]
            for c in running[:8]
        ],
        empty="No combat is running.",
        links=[(changelist(Combat, "status__exact=running"), "all running combats")],
    )


@dashboard.register("rewards", "Rewards", order=45)
def rewards_panel(request):
    unpaid = Reward.objects.filter(paid_at__isnull=True)
    dead = unpaid.filter(job__state=OutboxJob.State.DEAD)
    n_dead, n_pending = dead.count(), unpaid.count() - dead.count()
    return dashboard.Table(
        summary=f"{n_dead} dead payment(s), {n_pending} pending.",
        headers=["player", "combat", "gold", "last error"],
        rows=[
            [
                admin_link(r, r.player.name),
                combat_label(r.combat),
                display.money(r.gold),
                (r.job.last_error if r.job else "")[:60],
            ]
            for r in dead.select_related("player", "combat__zone", "combat__event", "job")[:5]
        ],
        empty="No dead payments.",
        state="degraded" if n_dead else "ok",
        links=[(changelist(Reward, "payment=dead"), "dead payments")],
    )


@dashboard.register("watchdog", "Schedule watchdog", order=50)
def watchdog_panel(request):
    report = nightstorm_schedules.last_report()
    problems = nightstorm_schedules.problems()
    if report is None:
        return dashboard.Table(summary="No schedule check has run yet.", state="degraded")
    lines = _watchdog_lines()
    checked = datetime.fromisoformat(report["checked_at"])
    return dashboard.Table(
        summary=f"Last check {display.stamp(checked)} ({display.relative(checked)}): "
        f"{len(report['created'])} created, {len(report['repaired'])} repaired, "
        f"{len(report['deleted'])} deleted, {report['ok']} already right.",
        headers=["what the check changed or found"],
        rows=[[line] for line in [*problems, *lines][:10]],
        empty="Nothing to repair.",
        state="degraded" if problems else "ok",
        links=[(changelist(Zone), "zones")],
    )
