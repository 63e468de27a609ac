"""A pool's money moves into stripes: the pool's amount becomes the sum of its stripes.

Each pool gets STRIPES (32) stripes. Stripe 0 takes over the pool's amount and its version, so
the pool's existing ledger rows become stripe 0's chain unchanged: the new `slot` column of the
ledger defaults to 0, added without rewriting (or updating) any append-only row. The other
stripes start empty at version 1. Each stripe carries the pool's rate and its share of the
pool's cap (`ceiling`). Then the pool's `amount` column goes.

Going back folds the stripes into `amount` again (the ledger keeps its slots).
"""

import django.db.models.deletion
from django.db import migrations, models

STRIPES = 32
SQLITE_TRIGGER = "jackpot_ledger_append_only_update"


def _ceilings(amounts, cap):
    if cap is None:
        return [None] * len(amounts)
    share, extra = divmod(max(0, cap - sum(amounts)), len(amounts))
    return [a + share + (i < extra) for i, a in enumerate(amounts)]


def into_stripes(apps, schema_editor):
    Pool = apps.get_model("jackpot", "JackpotPool")
    Stripe = apps.get_model("jackpot", "PoolStripe")
    for pool in Pool.objects.all():
        amounts = [pool.amount] + [0] * (STRIPES - 1)
        ceilings = _ceilings(amounts, pool.max_amount)
        Stripe.objects.bulk_create(
            Stripe(
                pool=pool,
                slot=slot,
                amount=amounts[slot],
                version=pool.version if slot == 0 else 1,
                rate_bp=pool.contribution_rate_bp,
                ceiling=ceilings[slot],
            )
            for slot in range(STRIPES)
        )


def out_of_stripes(apps, schema_editor):
    Pool = apps.get_model("jackpot", "JackpotPool")
    Stripe = apps.get_model("jackpot", "PoolStripe")
    for pool in Pool.objects.all():
        total = sum(Stripe.objects.filter(pool=pool).values_list("amount", flat=True))
        Pool.objects.filter(pk=pool.pk).update(amount=total)
    Stripe.objects.all().delete()


def sqlite_guard(apps, schema_editor):
    """SQLite rebuilds a table to change its constraints, which drops its triggers: put the
    append-only guard of migration 0002 back."""
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            f"CREATE TRIGGER IF NOT EXISTS {SQLITE_TRIGGER} BEFORE UPDATE ON jackpot_ledger "
            "BEGIN SELECT RAISE(ABORT, 'jackpot_ledger is append-only'); END"
        )


class Migration(migrations.Migration):
    dependencies = [("jackpot", "0003_pool_config_version")]

    operations = [
        migrations.CreateModel(
            name="PoolStripe",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("slot", models.PositiveSmallIntegerField()),
                ("amount", models.BigIntegerField(default=0)),
                ("version", models.PositiveIntegerField(default=1)),
                ("rate_bp", models.IntegerField()),
                ("ceiling", models.BigIntegerField(blank=True, null=True)),
                (
                    "pool",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="stripes",
                        to="jackpot.jackpotpool",
                    ),
                ),
            ],
            options={"db_table": "jackpot_stripe", "ordering": ["pool", "slot"]},
        ),
        migrations.AddConstraint(
            model_name="poolstripe",
            constraint=models.UniqueConstraint(
                fields=("pool", "slot"),
                name="jackpot_poolstripe_one_per_slot",
                violation_error_message="A pool has one stripe per slot.",
            ),
        ),
        migrations.AddConstraint(
            model_name="poolstripe",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gte", 0)),
                name="jackpot_poolstripe_amount_not_negative",
                violation_error_message="A stripe cannot hold a negative amount.",
            ),
        ),
        migrations.AddConstraint(
            model_name="poolstripe",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("ceiling__isnull", True), ("amount__lte", models.F("ceiling")), _connector="OR"
                ),
                name="jackpot_poolstripe_under_ceiling",
                violation_error_message="A stripe cannot hold more than its share of the cap.",
            ),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="slot",
            field=models.PositiveSmallIntegerField(default=0, help_text="The stripe changed."),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="pool_version",
            field=models.PositiveIntegerField(
                help_text="The version of the stripe (pool, slot) after this change."
            ),
        ),
        migrations.RemoveConstraint(
            model_name="ledgerentry", name="jackpot_ledgerentry_once_per_operation"
        ),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.UniqueConstraint(
                fields=("operation_id", "pool", "slot", "kind"),
                name="jackpot_ledgerentry_once_per_operation",
                violation_error_message="This operation already changed this stripe.",
            ),
        ),
        migrations.RemoveIndex(model_name="ledgerentry", name="jackpot_ledger_chain"),
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(
                fields=["pool", "slot", "pool_version", "id"], name="jackpot_ledger_stripe_chain"
            ),
        ),
        migrations.RunPython(into_stripes, out_of_stripes),
        migrations.RemoveConstraint(
            model_name="jackpotpool", name="jackpot_jackpotpool_amount_not_negative"
        ),
        migrations.RemoveField(model_name="jackpotpool", name="amount"),
        migrations.RunPython(sqlite_guard, migrations.RunPython.noop),
    ]
