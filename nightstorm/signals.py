"""Signal receivers of the toolkit."""


def ensure_toolkit_schedules(sender, using="default", **kwargs):
    """After `migrate`: the heartbeat, outbox drain and pruning schedules exist and are right."""
    from django.db import connections

    from nightstorm.schedules import TOOLKIT_SCHEDULES, ensure_schedules

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    ensure_schedules(TOOLKIT_SCHEDULES)
