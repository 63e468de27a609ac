"""API routes of the jackpot app."""

urlpatterns = []
