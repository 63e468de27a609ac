"""A pool's configuration gets its own version (`config_version`), starting at 1.

Only a change of seed, rate or cap bumps it; bets, wins and adjustments move `version` and the
balance only. Existing pools start at 1: what If-Match named before (the balance version) is
not carried over, so a client must read the pool's ETag again after this migration.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jackpot", "0002_seed_pools_and_sqlite_guard")]

    operations = [
        migrations.AddField(
            model_name="jackpotpool",
            name="config_version",
            field=models.PositiveIntegerField(
                default=1,
                editable=False,
                help_text="Grows only when seed, rate or cap change (what If-Match names).",
            ),
        ),
        migrations.AddConstraint(
            model_name="jackpotpool",
            constraint=models.CheckConstraint(
                condition=models.Q(config_version__gte=1),
                name="jackpot_jackpotpool_config_version_positive",
                violation_error_message="The configuration version starts at 1.",
            ),
        ),
    ]
