"""API routes of the connections app."""

urlpatterns = []
