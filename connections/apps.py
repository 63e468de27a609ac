from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    verbose_name = "Connections"

    def ready(self):
        from connections.health import check_connections
        from nightstorm import health

        health.register("connections", check_connections)
