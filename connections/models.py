"""The connections app keeps no rows: connection state lives in memory and in Redis.

`OnlineConnection` is an unmanaged model with no table. It exists so the admin can list who is
online (a custom view in `connections.admin`) under the usual admin permissions: game masters
need `connections.view_onlineconnection`.
"""

from django.db import models


class OnlineConnection(models.Model):
    """Admin entry point for the "who is online" page (no table; reads the connection store)."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "online connection"
        verbose_name_plural = "who is online"

    def __str__(self):
        return f"online connection {self.pk}"
