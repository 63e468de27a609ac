"""The admin site, branded for the people who run the game, whose front page is the dashboard
(`nightstorm.dashboard`)."""

from django.contrib import admin

from nightstorm import dashboard


class NightstormAdminSite(admin.AdminSite):
    site_header = "Nightstorm administration"
    site_title = "Nightstorm administration"
    index_title = "Dashboard"
    index_template = "admin/dashboard.html"

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "panels": dashboard.render_panels(request)}
        return super().index(request, extra_context)
