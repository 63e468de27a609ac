"""API routes of the game app."""

urlpatterns = []
