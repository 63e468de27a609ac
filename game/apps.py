from django.apps import AppConfig


def ensure_game_schedules(sender, using="default", **kwargs):
    """After `migrate`: the combat tick and arrivals schedules exist and are right."""
    from django.db import connections

    from game.schedules import GAME_SCHEDULES
    from nightstorm.schedules import ensure_schedules

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    ensure_schedules(GAME_SCHEDULES)


def check_world():
    from game.models import Zone

    count = Zone.objects.count()
    if count == 0:
        return "degraded", {"zones": 0, "reason": "run manage.py seed_world"}
    return "ok", {"zones": count}


class GameConfig(AppConfig):
    name = "game"
    verbose_name = "Game world"

    def ready(self):
        from django.db.models.signals import post_migrate

        from game import rewards  # noqa: F401  (registers the reward payout handler)
        from nightstorm import health

        post_migrate.connect(ensure_game_schedules, sender=self)
        health.register("game_world", check_world)
