from django.apps import AppConfig


class NightstormConfig(AppConfig):
    name = "nightstorm"
    verbose_name = "Platform"

    def ready(self):
        from django.db.models.signals import post_migrate

        from nightstorm import (
            admin_login,
            health,  # noqa: F401  (registers the built-in checks)
            tracing,
        )
        from nightstorm.signals import ensure_registered_schedules

        post_migrate.connect(ensure_registered_schedules, sender=self)
        admin_login.connect_signals()
        if tracing.enabled():
            tracing.configure()
