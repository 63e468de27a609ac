"""A ledger row references its stripe, not the pool row.

Checking a foreign key to the pool takes KEY SHARE on the pool row when a contribution commits,
so every bet wrote a lock into one of the three pool rows again. The composite foreign key
(pool_id, slot) -> jackpot_stripe (pool_id, slot) checks the stripe the writer already holds;
the stripe references its pool. PostgreSQL only (SQLite cannot add a foreign key to an
existing table); deferred to the commit, like Django's own.
"""

import django.db.models.deletion
from django.db import migrations, models

CONSTRAINT = "jackpot_ledger_stripe_fk"
SQLITE_TRIGGER = "jackpot_ledger_append_only_update"


def add_stripe_fk(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE jackpot_ledger ADD CONSTRAINT {CONSTRAINT} FOREIGN KEY (pool_id, slot) "
            "REFERENCES jackpot_stripe (pool_id, slot) DEFERRABLE INITIALLY DEFERRED"
        )


def drop_stripe_fk(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE jackpot_ledger DROP CONSTRAINT {CONSTRAINT}")


def sqlite_guard(apps, schema_editor):
    """SQLite rebuilds the table to change a foreign key, which drops its triggers: put the
    append-only guard of migration 0002 back."""
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            f"CREATE TRIGGER IF NOT EXISTS {SQLITE_TRIGGER} BEFORE UPDATE ON jackpot_ledger "
            "BEGIN SELECT RAISE(ABORT, 'jackpot_ledger is append-only'); END"
        )


class Migration(migrations.Migration):
    dependencies = [("jackpot", "0004_pool_stripes")]

    operations = [
        migrations.AlterField(
            model_name="ledgerentry",
            name="pool",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="ledger",
                to="jackpot.jackpotpool",
            ),
        ),
        migrations.RunPython(add_stripe_fk, drop_stripe_fk),
        migrations.RunPython(sqlite_guard, migrations.RunPython.noop),
    ]
