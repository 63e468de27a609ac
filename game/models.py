"""The game world: zones, routes, players and their journeys, Nightstorm events, combats, seats
and rewards.

The invariants that must hold under concurrency live here as database constraints, so they hold
however a row gets written (a service that forgot a lock, an admin edit, a raw SQL fix-up):

- one journey in flight per player (partial unique index);
- one seat per (combat, player), and one *active* seat per player, i.e. a player is in at most
  one open or running combat (partial unique index on the denormalised `active` flag);
- one Nightstorm event per (zone, slot), one combat per (event, index);
- one reward per (combat, player).

The combat capacity itself is enforced by the row lock on the combat in
`game.registration.register` (a count cannot be a plain constraint).
"""

import uuid

import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from nightstorm.models import AppendOnlyModel, OutboxJob, VersionedModel


class Zone(models.Model):
    """One of the 81 zones of the world. Seeded by `manage.py seed_world`; codes are stable.

    Each zone has its storm boss, whom every combat of the zone's Nightstorm faces.
    """

    code = models.CharField(max_length=8, unique=True)
    name = models.CharField(max_length=100)
    region = models.CharField(max_length=50)
    boss_name = models.CharField(max_length=100, blank=True)
    boss_hp = models.PositiveIntegerField(default=1000)
    boss_attack = models.PositiveIntegerField(default=10)

    class Meta:
        ordering = ["code"]

    def __str__(self):
        return f"{self.code} {self.name}"


class Route(models.Model):
    """The travel time from one zone to another (seeded for every ordered pair of zones)."""

    origin = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="routes_out")
    destination = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="routes_in")
    seconds = models.PositiveIntegerField()

    class Meta:
        ordering = ["origin", "destination"]
        constraints = [
            models.UniqueConstraint(
                fields=["origin", "destination"],
                name="%(app_label)s_%(class)s_unique_pair",
                violation_error_message="This route already exists.",
            ),
            models.CheckConstraint(
                condition=~Q(origin=models.F("destination")),
                name="%(app_label)s_%(class)s_not_a_loop",
                violation_error_message="A route joins two different zones.",
            ),
            models.CheckConstraint(
                condition=Q(seconds__gte=1),
                name="%(app_label)s_%(class)s_takes_time",
                violation_error_message="Travel takes at least a second.",
            ),
        ]

    def __str__(self):
        return f"{self.origin.code}->{self.destination.code} ({self.seconds}s)"


class Player(VersionedModel):
    """A user's character. Gold is an integer amount of minor units and never negative."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="player"
    )
    name = models.CharField(max_length=150, unique=True)
    zone = models.ForeignKey(
        Zone, on_delete=models.PROTECT, related_name="players", null=True, blank=True
    )
    gold = models.BigIntegerField(default=0)
    hp = models.PositiveIntegerField(default=100)
    level = models.PositiveIntegerField(default=1)
    xp = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gold__gte=0),
                name="%(app_label)s_%(class)s_gold_not_negative",
                violation_error_message="Gold cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(xp__gte=0),
                name="%(app_label)s_%(class)s_xp_not_negative",
                violation_error_message="Experience cannot be negative.",
            ),
        ]

    def __str__(self):
        return self.name


class Journey(models.Model):
    """A player's trip to another zone; in flight until `arrived_at` is set.

    At most one journey per player is in flight: a partial unique index, so two concurrent
    requests cannot both start one even if they both passed the service's check.
    """

    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="journeys")
    origin = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="+", null=True)
    destination = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    arrives_at = models.DateTimeField()
    arrived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["player"],
                condition=Q(arrived_at__isnull=True),
                name="%(app_label)s_%(class)s_one_in_flight",
                violation_error_message="This player is already traveling.",
            ),
            models.CheckConstraint(
                condition=Q(arrives_at__gte=models.F("started_at")),
                name="%(app_label)s_%(class)s_arrives_after_start",
                violation_error_message="A journey arrives after it starts.",
            ),
        ]
        indexes = [
            # apply_arrivals' scan: journeys in flight, by due time.
            models.Index(
                fields=["arrives_at"],
                name="game_journey_in_flight_due",
                condition=Q(arrived_at__isnull=True),
            )
        ]

    def __str__(self):
        origin = self.origin.name if self.origin_id else "nowhere"
        return f"{self.player.name}: {origin} → {self.destination.name}"


class NightstormEvent(models.Model):
    """A Nightstorm in one zone at one scheduled slot; it opens a few combats.

    (zone, slot) is unique: a schedule fired twice (two workers, a retry) creates one event.
    """

    class State(models.TextChoices):
        OPEN = "open"
        RUNNING = "running"
        FINISHED = "finished"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    zone = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="nightstorms")
    slot = models.DateTimeField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    registration_closes_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-slot", "zone"]
        constraints = [
            models.UniqueConstraint(
                fields=["zone", "slot"],
                name="%(app_label)s_%(class)s_one_per_zone_slot",
                violation_error_message="This zone already has a Nightstorm at this slot.",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["open", "running", "finished"]),
                name="%(app_label)s_%(class)s_state_valid",
                violation_error_message="Unknown event state.",
            ),
        ]

    def __str__(self):
        return f"Nightstorm in {self.zone.name} at {self.slot:%Y-%m-%d %H:%M} UTC"


class Combat(VersionedModel):
    """One combat of a Nightstorm: up to `capacity` players against the zone's storm boss.

    open -> running -> finished, or cancelled (from open or running). `turn` counts resolved
    turns; `next_turn_at` is when the orchestrator may resolve the next one, which also stops
    two orchestrators in the same tick period from both advancing it.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        RUNNING = "running"
        FINISHED = "finished"
        CANCELLED = "cancelled"

    class Outcome(models.TextChoices):
        NONE = "", "—"
        VICTORY = "victory"
        DEFEAT = "defeat"
        TIMEOUT = "timeout"

    event = models.ForeignKey(NightstormEvent, on_delete=models.PROTECT, related_name="combats")
    zone = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="combats")
    index = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    capacity = models.PositiveSmallIntegerField()
    turn = models.PositiveIntegerField(default=0)
    boss_max_hp = models.PositiveIntegerField(default=0)
    boss_hp = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default="", blank=True)
    next_turn_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["event", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "index"],
                name="%(app_label)s_%(class)s_unique_index_in_event",
                violation_error_message="This event already has a combat with this number.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["open", "running", "finished", "cancelled"]),
                name="%(app_label)s_%(class)s_status_valid",
                violation_error_message="Unknown combat status.",
            ),
            models.CheckConstraint(
                condition=Q(capacity__gte=1),
                name="%(app_label)s_%(class)s_capacity_positive",
                violation_error_message="A combat has at least one seat.",
            ),
            models.CheckConstraint(
                condition=Q(boss_hp__lte=models.F("boss_max_hp")),
                name="%(app_label)s_%(class)s_boss_hp_in_range",
                violation_error_message="The boss cannot have more than its maximum hp.",
            ),
            models.CheckConstraint(
                condition=~Q(status="running") | Q(next_turn_at__isnull=False),
                name="%(app_label)s_%(class)s_running_has_next_turn",
                violation_error_message="A running combat knows when its next turn is due.",
            ),
        ]
        indexes = [
            # process_active_combats' scan: running combats whose next turn is due.
            models.Index(
                fields=["next_turn_at"],
                name="game_combat_running_due",
                condition=Q(status="running"),
            )
        ]

    def __str__(self):
        return f"Combat {self.index} of {self.event}"


class Registration(models.Model):
    """A player's seat in a combat, and their state in the fight.

    `active` is true while the combat is open or running (it is cleared when the combat ends),
    so "a player is in at most one open or running combat" is a partial unique index on
    (player) where active.
    """

    combat = models.ForeignKey(Combat, on_delete=models.CASCADE, related_name="registrations")
    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="registrations")
    active = models.BooleanField(default=True)
    hp = models.PositiveIntegerField(default=0)
    damage_dealt = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["combat", "player"],
                name="%(app_label)s_%(class)s_one_seat_per_player",
                violation_error_message="This player already has a seat in this combat.",
            ),
            models.UniqueConstraint(
                fields=["player"],
                condition=Q(active=True),
                name="%(app_label)s_%(class)s_one_active_combat",
                violation_error_message="This player is already in an open or running combat.",
            ),
        ]

    def __str__(self):
        return f"{self.player.name} in {self.combat}"


class Reward(models.Model):
    """What a finished combat pays one participant; paid once, by the retry queue.

    Written in the transaction that finishes the combat; `paid_at` is set in the same
    transaction that credits the player (see `game.rewards.pay_reward`).
    """

    combat = models.ForeignKey(Combat, on_delete=models.PROTECT, related_name="rewards")
    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="rewards")
    gold = models.BigIntegerField(default=0)
    xp = models.BigIntegerField(default=0)
    damage_dealt = models.PositiveIntegerField(default=0)
    job = models.ForeignKey(
        OutboxJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["combat", "player"],
                name="%(app_label)s_%(class)s_once_per_combat_player",
                violation_error_message="This player already has a reward for this combat.",
            ),
            models.CheckConstraint(
                condition=Q(gold__gte=0) & Q(xp__gte=0),
                name="%(app_label)s_%(class)s_amounts_not_negative",
                violation_error_message="Rewards are never negative.",
            ),
        ]

    def __str__(self):
        return f"{self.gold} gold, {self.xp} xp for {self.player.name}"


class GoldKind(models.TextChoices):
    OPENING = "opening"  # the balance a player had when the ledger began, or starts with
    REWARD = "reward"  # a combat reward paid by the retry queue
    JACKPOT_WIN = "jackpot_win"  # a jackpot pool paid out
    ADJUSTMENT = "adjustment"  # a game master's signed correction


class GoldEntry(AppendOnlyModel):
    """One change of one player's gold: signed amount, the balance after it, and its cause.

    Written by `game.gold.credit` in the transaction that changes `Player.gold`, so at every
    commit `player.gold == sum(entry.amount)` over the player's entries (`manage.py
    gold_audit`). `reference` names the cause (a reward id, a jackpot operation id, an admin
    action); (kind, reference, player) is unique, so a cause credits a player at most once.
    """

    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="gold_entries")
    kind = models.CharField(max_length=12, choices=GoldKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    reference = models.CharField(max_length=120)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "game_gold_ledger"
        verbose_name = "gold ledger entry"
        verbose_name_plural = "gold ledger entries"
        ordering = ["-id"]
        indexes = [
            # gold_audit and the player page read a player's entries in order.
            models.Index(fields=["player", "id"], name="game_gold_ledger_player"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "reference", "player"],
                name="%(app_label)s_%(class)s_once_per_cause",
                violation_error_message="This cause already changed this player's gold.",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=GoldKind.values),
                name="%(app_label)s_%(class)s_kind_valid",
                violation_error_message="Unknown gold entry kind.",
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0),
                name="%(app_label)s_%(class)s_balance_not_negative",
                violation_error_message="Gold cannot go negative.",
            ),
        ]
        triggers = [
            pgtrigger.Protect(name="append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self):
        return f"{self.player.name}: {self.kind} {self.amount:+d} → {self.balance_after}"


class CombatTurn(models.Model):
    """One resolved turn of a combat: when it was due, when it ran, the boss's hp after it.

    Written by the orchestrator in the transaction that resolves the turn (one INSERT per
    batch). Unique (combat, turn): a turn applied twice cannot commit. It is the turn-by-turn
    log of a fight, and the proof that turns run one tick apart (`ran_at - due_at` is the
    turn's lateness).
    """

    combat = models.ForeignKey(Combat, on_delete=models.CASCADE, related_name="turns")
    turn = models.PositiveIntegerField()
    due_at = models.DateTimeField()
    ran_at = models.DateTimeField()
    boss_hp = models.PositiveIntegerField()

    class Meta:
        ordering = ["combat", "turn"]
        constraints = [
            models.UniqueConstraint(
                fields=["combat", "turn"],
                name="%(app_label)s_%(class)s_once_per_turn",
                violation_error_message="This combat already has this turn.",
            )
        ]

    def __str__(self):
        return f"turn {self.turn} of {self.combat}"
