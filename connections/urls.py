"""API routes of the connections app (mounted at api/v1/connections/)."""

from django.urls import path

from connections import api

app_name = "connections"

urlpatterns = [
    path("", api.ConnectionListView.as_view(), name="list"),
    path("<int:handle>/", api.ConnectionDetailView.as_view(), name="detail"),
    path("<int:handle>/bind/", api.BindView.as_view(), name="bind"),
    path("<int:handle>/metadata/", api.MetadataView.as_view(), name="metadata"),
]
