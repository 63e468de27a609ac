"""API routes of the game app (mounted under /api/v1/)."""

from django.urls import path

from game import api

urlpatterns = [
    path("auth/register/", api.RegisterView.as_view(), name="auth-register"),
    path("players/me/", api.PlayerMeView.as_view(), name="player-me"),
    path("players/me/travel/", api.TravelView.as_view(), name="player-travel"),
    path("zones/", api.ZoneListView.as_view(), name="zone-list"),
    path("nightstorms/", api.NightstormListView.as_view(), name="nightstorm-list"),
    path("combats/<str:pk>/", api.CombatDetailView.as_view(), name="combat-detail"),
    path(
        "combats/<str:pk>/registrations/",
        api.CombatRegistrationView.as_view(),
        name="combat-registrations",
    ),
]
