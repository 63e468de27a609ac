"""Seed the three pools (each with its `seed` ledger row) and, on SQLite, refuse ledger edits.

PostgreSQL gets its append-only trigger from django-pgtrigger (0001). SQLite gets a plain
BEFORE UPDATE trigger here. No SQLite DELETE trigger: Django's test-database flush empties
tables with `DELETE FROM`, which such a trigger would break for every transactional test of
the project; deletes are refused by the ORM (`LedgerQuerySet`, `LedgerEntry.delete`) and the
admin instead, and by the trigger on PostgreSQL.
"""

import uuid

from django.db import migrations
from django.utils import timezone

DEFAULT_POOLS = (
    # group, seed_amount, contribution_rate_bp, max_amount (minor units)
    ("minor", 1_000, 100, 500_000),
    ("major", 10_000, 50, 5_000_000),
    ("mega", 100_000, 25, None),
)

SQLITE_TRIGGER = "jackpot_ledger_append_only_update"


def seed_pools(apps, schema_editor):
    Pool = apps.get_model("jackpot", "JackpotPool")
    Ledger = apps.get_model("jackpot", "LedgerEntry")
    now = timezone.now()
    for group, seed, rate, cap in DEFAULT_POOLS:
        if Pool.objects.filter(group=group).exists():
            continue
        pool = Pool.objects.create(
            id=uuid.uuid4(), group=group, amount=seed, seed_amount=seed,
            contribution_rate_bp=rate, max_amount=cap, version=1, last_modified_at=now,
            created_at=now, updated_at=now,
        )
        Ledger.objects.create(
            pool=pool, kind="seed", amount=seed, balance_after=seed, pool_version=1,
            operation_id=f"seed:{group}", created_at=now,
        )


def sqlite_guard(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    schema_editor.execute(
        f"CREATE TRIGGER IF NOT EXISTS {SQLITE_TRIGGER} BEFORE UPDATE ON jackpot_ledger "
        "BEGIN SELECT RAISE(ABORT, 'jackpot_ledger is append-only'); END"
    )


def drop_sqlite_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {SQLITE_TRIGGER}")


class Migration(migrations.Migration):
    dependencies = [("jackpot", "0001_initial")]

    operations = [
        migrations.RunPython(sqlite_guard, drop_sqlite_guard),
        migrations.RunPython(seed_pools, migrations.RunPython.noop),
    ]
