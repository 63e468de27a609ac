"""Jackpot pools, their append-only ledger, and the contribution and win records.

A pool's money lives in its stripes (`PoolStripe`, STRIPES_PER_POOL rows per pool): the pool's
amount is the sum of its stripes' amounts. A contribution changes one stripe per pool (the first
free one, SKIP LOCKED), so bets do not queue on one hot row; a win, an adjustment or a
configuration change locks all stripes of its pool (primary-key order).

Invariant (checked by `manage.py jackpot_audit`): for every pool, at every committed moment,
`sum(stripe.amount) == sum(ledger.amount)` over the pool's ledger rows. A pool's first ledger
row is its `seed` row (+seed_amount, on stripe 0, written with the pool), so "amount = seed at
creation + every change since" and "amount = sum of the ledger" are the same statement. Rows of
one stripe form a chain ordered by (`pool_version`, `id`): each row's `balance_after` is the
previous row's `balance_after` plus its own `amount`, and the last one equals the stripe's
amount.
"""

import pgtrigger
from django.db import models
from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from game.models import Player
from nightstorm.models import AppendOnlyModel, LiveManager, VersionedModel

BP_SCALE = 10_000  # basis points in a whole bet
# Stripes per pool: enough that the concurrent contributors usually find a free one (each
# holds one stripe per pool from its first statement to its commit). Created with the pool.
STRIPES_PER_POOL = 32


class PoolGroup(models.TextChoices):
    MINOR = "minor"
    MAJOR = "major"
    MEGA = "mega"


GROUPS = tuple(PoolGroup.values)  # display order: minor, major, mega


class PoolManager(LiveManager):
    """Live pools, each annotated with `amount`: the sum of its stripes (one snapshot)."""

    def get_queryset(self):
        stripes = (
            PoolStripe.objects.filter(pool=OuterRef("pk"))
            .order_by()
            .values("pool")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        return super().get_queryset().annotate(amount=Coalesce(Subquery(stripes), 0))


class JackpotPool(VersionedModel):
    """One jackpot pool: its configuration. Its money is in its stripes (`PoolStripe`); read
    through `objects`, a pool carries `amount`, the sum of its stripes.

    Two versions:
    - `version` grows on every change of the row itself: a win, an adjustment, a configuration
      change (contributions change stripes, not this row).
    - `config_version` grows only when the configuration (`seed_amount`,
      `contribution_rate_bp`, `max_amount`) changes. It is what a game master's `If-Match`
      (API) or opened page (admin) names: under live betting `version` moves many times a
      second, so a precondition on it would refuse almost every configuration edit, while a
      precondition on `config_version` only refuses an edit made over another edit.
    `lock_holder` names the operation that last changed the pool under its row lock (a win, an
    adjustment or a configuration change) — a debugging aid, not a lock. Lock order, for every
    writer: pool rows first (primary-key order), then stripes (primary-key order).
    """

    group = models.CharField(max_length=10, choices=PoolGroup.choices, unique=True)
    seed_amount = models.BigIntegerField(
        help_text="Minor units the pool restarts from after a win."
    )
    contribution_rate_bp = models.IntegerField(help_text="Share of each bet, in basis points.")
    max_amount = models.BigIntegerField(
        null=True, blank=True, help_text="Cap on the pool; contributions above it go to the house."
    )
    config_version = models.PositiveIntegerField(
        default=1,
        editable=False,
        help_text="Grows only when seed, rate or cap change (what If-Match names).",
    )
    lock_holder = models.CharField(max_length=120, blank=True, editable=False)
    last_modified_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "jackpot_pool"
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(group__in=GROUPS),
                name="%(app_label)s_%(class)s_group_valid",
                violation_error_message="Unknown jackpot group.",
            ),
            models.CheckConstraint(
                condition=Q(seed_amount__gte=0),
                name="%(app_label)s_%(class)s_seed_not_negative",
                violation_error_message="The seed amount cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(contribution_rate_bp__gte=0, contribution_rate_bp__lte=BP_SCALE),
                name="%(app_label)s_%(class)s_rate_in_range",
                violation_error_message="The contribution rate must be 0-10000 basis points.",
            ),
            models.CheckConstraint(
                condition=Q(config_version__gte=1),
                name="%(app_label)s_%(class)s_config_version_positive",
                violation_error_message="The configuration version starts at 1.",
            ),
            models.CheckConstraint(
                condition=Q(max_amount__isnull=True) | Q(max_amount__gte=F("seed_amount")),
                name="%(app_label)s_%(class)s_max_covers_seed",
                violation_error_message="The maximum amount cannot be below the seed amount.",
            ),
        ]

    objects = PoolManager()

    def __str__(self):
        return self.group


class PoolStripe(models.Model):
    """One share of a pool's balance. A pool's amount is the sum of its stripes.

    Contributions claim one free stripe per pool (`FOR UPDATE SKIP LOCKED`) and add to it, so
    concurrent bets spread over the stripes instead of queueing on the pool row. What a
    contribution needs from the pool's configuration is copied onto each stripe by the
    writers that lock all of the pool's stripes (configuration changes, wins, adjustments),
    so a stripe row read under its lock is all a contribution has to read:
    - `rate_bp`: the pool's contribution rate;
    - `ceiling`: this stripe's share of the pool's cap (null: no cap). The ceilings of a pool
      add up to `max(max_amount, amount)` when they are spread, so a stripe that stays under
      its ceiling keeps the pool under its cap without looking at the other stripes.
    `version` grows with every change of `amount` and orders the stripe's ledger chain.
    """

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the unique (pool, slot) index leads with it.
    pool = models.ForeignKey(
        JackpotPool, on_delete=models.PROTECT, related_name="stripes", db_index=False
    )
    slot = models.PositiveSmallIntegerField()
    amount = models.BigIntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    rate_bp = models.IntegerField()
    ceiling = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "jackpot_stripe"
        ordering = ["pool", "slot"]
        constraints = [
            models.UniqueConstraint(
                fields=["pool", "slot"],
                name="%(app_label)s_%(class)s_one_per_slot",
                violation_error_message="A pool has one stripe per slot.",
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0),
                name="%(app_label)s_%(class)s_amount_not_negative",
                violation_error_message="A stripe cannot hold a negative amount.",
            ),
            models.CheckConstraint(
                condition=Q(ceiling__isnull=True) | Q(amount__lte=F("ceiling")),
                name="%(app_label)s_%(class)s_under_ceiling",
                violation_error_message="A stripe cannot hold more than its share of the cap.",
            ),
        ]

    def __str__(self):
        return f"{self.pool_id}#{self.slot}: {self.amount}"


class LedgerKind(models.TextChoices):
    SEED = "seed"  # the pool's first row: +seed_amount at creation
    CONTRIBUTION = "contribution"  # +share of a bet
    WIN = "win"  # -everything the pool held, paid to a player
    RESET = "reset"  # +seed_amount after a win, funded by the house
    ADJUSTMENT = "adjustment"  # a game master's signed correction


class LedgerEntry(AppendOnlyModel):
    """One change of one stripe of a pool: signed amount, the stripe's balance after it, and who
    caused it. `pool_version` is the version of that stripe (`pool`, `slot`) after the change.

    Append-only: PostgreSQL refuses UPDATE and DELETE with a trigger (django-pgtrigger); on
    SQLite a migration installs an UPDATE trigger, and the ORM refuses both everywhere.
    """

    # The row references its stripe, (pool, slot) -> jackpot_stripe (pool_id, slot), with a
    # composite foreign key that migration 0005 adds on PostgreSQL; the stripe references the
    # pool. Not a foreign key to the pool row itself: checking one takes KEY SHARE on the pool
    # row at every contribution's commit, which would make the three pool rows hot again
    # (every bet writing a lock into them); the stripe's row is one the writer holds already.
    # No index of its own either: the stripe chain's index leads with it, and a B-tree on a
    # column with a handful of values costs every insert a duplicate-heavy leaf (measured:
    # dropping it cut a contribution's PostgreSQL CPU by about a fifth).
    pool = models.ForeignKey(
        JackpotPool,
        on_delete=models.PROTECT,
        related_name="ledger",
        db_constraint=False,
        db_index=False,
    )
    slot = models.PositiveSmallIntegerField(default=0, help_text="The stripe changed.")
    kind = models.CharField(max_length=12, choices=LedgerKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    pool_version = models.PositiveIntegerField(
        help_text="The version of the stripe (pool, slot) after this change."
    )
    operation_id = models.CharField(max_length=100)
    player = models.ForeignKey(
        Player, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "jackpot_ledger"
        verbose_name_plural = "ledger entries"
        ordering = ["-id"]
        indexes = [
            # jackpot_audit walks each stripe's chain in this order.
            models.Index(
                fields=["pool", "slot", "pool_version", "id"], name="jackpot_ledger_stripe_chain"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["operation_id", "pool", "slot", "kind"],
                name="%(app_label)s_%(class)s_once_per_operation",
                violation_error_message="This operation already changed this stripe.",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=LedgerKind.values),
                name="%(app_label)s_%(class)s_kind_valid",
                violation_error_message="Unknown ledger entry kind.",
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0),
                name="%(app_label)s_%(class)s_balance_not_negative",
                violation_error_message="A pool balance cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(kind="adjustment")
                | Q(kind="win", amount__lte=0)
                | Q(kind__in=["seed", "contribution", "reset"], amount__gte=0),
                name="%(app_label)s_%(class)s_amount_sign",
                violation_error_message="The amount's sign does not fit the entry kind.",
            ),
        ]
        triggers = [
            pgtrigger.Protect(name="append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self):
        return f"{self.pool.group}: {self.kind} {self.amount:+d} → {self.balance_after}"


class Contribution(models.Model):
    """One bet's contribution, applied once per `operation_id`.

    `house_amount` is what the pools did not get: the rounding remainder of the per-pool floor
    plus any `overflow_amount` refused by a capped pool. The database checks that the parts and
    the house share add up to the bet, so no cent is created or lost here.
    """

    operation_id = models.CharField(max_length=100)
    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="+")
    bet = models.BigIntegerField()
    minor_amount = models.BigIntegerField()
    major_amount = models.BigIntegerField()
    mega_amount = models.BigIntegerField()
    house_amount = models.BigIntegerField()
    overflow_amount = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation_id"],
                name="%(app_label)s_%(class)s_unique_operation",
                violation_error_message="This contribution was already applied.",
            ),
            models.CheckConstraint(
                condition=Q(bet__gt=0),
                name="%(app_label)s_%(class)s_bet_positive",
                violation_error_message="A bet must be positive.",
            ),
            models.CheckConstraint(
                condition=Q(
                    minor_amount__gte=0,
                    major_amount__gte=0,
                    mega_amount__gte=0,
                    overflow_amount__gte=0,
                    house_amount__gte=F("overflow_amount"),
                ),
                name="%(app_label)s_%(class)s_parts_not_negative",
                violation_error_message="Contribution parts cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(
                    bet=F("minor_amount") + F("major_amount") + F("mega_amount") + F("house_amount")
                ),
                name="%(app_label)s_%(class)s_parts_sum_to_bet",
                violation_error_message="The parts and the house share must add up to the bet.",
            ),
        ]

    def __str__(self):
        return f"{self.operation_id}: {self.bet}"

    @property
    def amounts(self) -> dict[str, int]:
        return {g: getattr(self, f"{g}_amount") for g in GROUPS}


class Win(models.Model):
    """A jackpot payout, applied once per `operation_id`."""

    operation_id = models.CharField(max_length=100)
    pool = models.ForeignKey(JackpotPool, on_delete=models.PROTECT, related_name="wins")
    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation_id"],
                name="%(app_label)s_%(class)s_unique_operation",
                violation_error_message="This win was already paid.",
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0),
                name="%(app_label)s_%(class)s_amount_not_negative",
                violation_error_message="A win cannot pay a negative amount.",
            ),
        ]

    def __str__(self):
        return f"{self.operation_id}: {self.amount}"
