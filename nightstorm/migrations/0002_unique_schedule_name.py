"""django-q2's Schedule.name is not unique; named schedules must exist once, so enforce it.

A partial unique index (names are optional in django-q2) works on PostgreSQL and SQLite.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("nightstorm", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE UNIQUE INDEX IF NOT EXISTS nightstorm_schedule_name_unique "
            "ON django_q_schedule (name) WHERE name IS NOT NULL",
            reverse_sql="DROP INDEX IF EXISTS nightstorm_schedule_name_unique",
        ),
    ]
