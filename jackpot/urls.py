"""API routes of the jackpot app (mounted at api/v1/jackpots/)."""

from django.urls import path

from jackpot import api

urlpatterns = [
    path("", api.PoolListView.as_view(), name="jackpot-pools"),
    path("contributions/", api.ContributionView.as_view(), name="jackpot-contributions"),
    path("ledger/", api.LedgerListView.as_view(), name="jackpot-ledger"),
    path("<str:group>/", api.PoolDetailView.as_view(), name="jackpot-pool"),
    path("<str:group>/wins/", api.WinView.as_view(), name="jackpot-wins"),
]
