from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from nightstorm.api.metrics_view import metrics_view
from nightstorm.api.views import DocsView, TokenView
from nightstorm.health import health_view, live_view
from nightstorm.pages import landing

urlpatterns = [
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", TokenView.as_view(), name="auth-token"),
    path("api/v1/", include("game.urls")),
    path("api/v1/jackpots/", include("jackpot.urls")),
    path("api/v1/connections/", include("connections.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="api-docs"),
    path("health/", health_view, name="health"),
    path("health/live/", live_view, name="health-live"),
    path("health/ready/", health_view, name="health-ready"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "nightstorm.api.errors.json_400"
handler403 = "nightstorm.api.errors.json_403"
handler404 = "nightstorm.api.errors.json_404"
handler500 = "nightstorm.api.errors.json_500"
