"""Admin for game masters: a "who is online" page read from the connection store."""

import time

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse

from connections.models import OnlineConnection
from connections.state import StoreUnavailable, format_duration
from connections.web import get_connections
from nightstorm import dashboard
from nightstorm.admin import ReadOnlyModelAdmin


@admin.register(OnlineConnection)
class OnlineConnectionAdmin(ReadOnlyModelAdmin):
    """The changelist is replaced by a page listing the shared store's connections (there is no
    table behind the model); nobody adds, edits or deletes through it."""

    def get_urls(self):
        # Only the list exists: there is no table behind the model, so no change, history or
        # delete pages.
        from django.urls import path

        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.changelist_view), name=name)]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        store = get_connections()
        now, error, rows, stats = time.time(), None, [], {}
        try:
            conns = store.online()
            stats = store.stats()
        except StoreUnavailable as exc:
            # This process holds no copy to fall back on.
            conns, error, stats = [], exc.detail, {"mode": "redis"}
        conns.sort(key=lambda c: (c.player_name is None, (c.player_name or "").lower(), c.handle))
        for conn in conns:
            rows.append(
                {
                    "conn": conn,
                    "on_for": format_duration(now - conn.connected_at),
                    "idle": format_duration(conn.idle_seconds(now)),
                    "idle_seconds": round(conn.idle_seconds(now)),
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Who is online",
            "opts": self.model._meta,
            "rows": rows,
            "players": sum(1 for c in conns if c.player_name),
            "stats": stats,
            "error": error,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "connections/online.html", context)


@dashboard.register("online", "Who is online", order=70)
def online_panel(request):
    store = get_connections()
    now = time.time()
    try:
        conns = store.online()
    except StoreUnavailable as exc:
        return dashboard.Table(
            summary=f"The connection store cannot be read: {exc.detail}", state="down"
        )
    players = sorted((c for c in conns if c.player_name), key=lambda c: c.idle_seconds(now))
    return dashboard.Table(
        summary=f"{len(players)} player(s) logged in over {len(conns)} connection(s).",
        headers=["player", "on for", "idle"],
        rows=[
            [
                c.player_name,
                format_duration(now - c.connected_at),
                format_duration(c.idle_seconds(now)),
            ]
            for c in players[:8]
        ],
        empty="Nobody is logged in.",
        links=[(reverse("admin:connections_onlineconnection_changelist"), "every connection")],
    )
