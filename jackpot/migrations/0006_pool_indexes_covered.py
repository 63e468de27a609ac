"""The pool columns of the ledger and of the stripes lose their own indexes: the stripe chain's
index and the unique (pool, slot) index lead with them.

Only the indexes are dropped. AlterField would rebuild the ledger table on SQLite, which drops
the append-only trigger 0002 installs there, and would re-create the stripe's foreign key on
PostgreSQL.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = {
    "jackpot_ledger_pool_id_c4f5847b": ("jackpot_ledger", "pool_id"),
    "jackpot_stripe_pool_id_1ddd3cb7": ("jackpot_stripe", "pool_id"),
}


class Migration(migrations.Migration):
    dependencies = [
        ("jackpot", "0005_ledger_references_its_stripe"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="pool",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="ledger",
                        to="jackpot.jackpotpool",
                    ),
                ),
                migrations.AlterField(
                    model_name="poolstripe",
                    name="pool",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="stripes",
                        to="jackpot.jackpotpool",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
                )
                for name, (table, column) in INDEXES.items()
            ],
        ),
    ]
