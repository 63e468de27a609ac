from django.apps import AppConfig


class JackpotConfig(AppConfig):
    name = "jackpot"
    verbose_name = "Jackpots"

    def ready(self):
        from jackpot.health import check_conflicts, check_locks
        from nightstorm import health

        health.register("jackpot_locks", check_locks)
        health.register("jackpot_conflicts", check_conflicts)
