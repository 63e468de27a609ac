from django.apps import AppConfig


def check_world():
    from game.models import Zone

    count = Zone.objects.count()
    if count == 0:
        return "degraded", {"zones": 0, "reason": "run manage.py seed_world"}
    return "ok", {"zones": count}


def check_schedules_on_cluster_start(sender, proc_name=None, **kwargs):
    """django-q2 sends `post_spawn` as each worker starts: check the Nightstorm schedules.

    Several workers starting together is fine: one runs the check, the others find it locked
    and move on. A failure here must not stop the worker; the watchdog runs the check again.
    """
    import logging

    from game.storms import schedules

    try:
        report = schedules.check_schedules_quietly()
    except Exception:
        logging.getLogger(__name__).exception("schedule check at cluster start failed")
        return
    logging.getLogger(__name__).info("%s (%s)", report.summary(), proc_name)


class GameConfig(AppConfig):
    name = "game"
    verbose_name = "Game world"

    def ready(self):
        from django.db.models.signals import post_migrate
        from django_q.signals import post_spawn

        from game import rewards  # noqa: F401  (registers the reward payout handler)
        from game.schedules import GAME_SCHEDULES, retire_after_migrate
        from game.storms.health import check_orchestrators, check_scheduler
        from nightstorm import health, schedules

        schedules.register(GAME_SCHEDULES)
        post_migrate.connect(retire_after_migrate, sender=self, dispatch_uid="game.retire")
        post_spawn.connect(check_schedules_on_cluster_start, dispatch_uid="game.schedule_check")
        health.register("game_world", check_world)
        health.register("scheduler", check_scheduler)
        health.register("orchestrator", check_orchestrators)
