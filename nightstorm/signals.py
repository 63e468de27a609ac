"""Signal receivers of the toolkit."""


def ensure_registered_schedules(sender, using="default", **kwargs):
    """After `migrate`: every declared recurring schedule exists and is right."""
    from django.db import connections

    from nightstorm.schedules import ensure_schedules, registered

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    ensure_schedules(registered())
