"""The API's URLs plus the two ceilings the HTTP benchmark measures beside it:

* `bench/ceiling/django/`: a minimal Django view (a small JSON body) through the same
  middleware stack, the most any endpoint could serve on this server;
* `bench/ceiling/drf/`: a DRF view with DRF's own token auth and the default renderer (one
  query, built by the ORM on every request: the token and its user), the floor a plain DRF
  API pays for an authenticated request;
* `bench/ceiling/drf-platform/`: the same view with the platform's token auth (its lookup
  compiled once, `nightstorm.api.authentication`), what that floor is here.

Served only by the benchmark's gunicorn (`bench.http_settings`), never by production.
"""

from django.http import JsonResponse
from django.urls import path
from rest_framework import authentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from nightstorm.urls import handler400, handler403, handler404, handler500  # noqa: F401
from nightstorm.urls import urlpatterns as api_urlpatterns


def django_ceiling(request):
    return JsonResponse({"ok": True})


class DrfCeiling(APIView):
    authentication_classes = [authentication.TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"ok": True, "user": request.user.pk})


class PlatformAuthCeiling(DrfCeiling):
    authentication_classes = api_settings.DEFAULT_AUTHENTICATION_CLASSES


urlpatterns = [
    path("bench/ceiling/django/", django_ceiling),
    path("bench/ceiling/drf/", DrfCeiling.as_view()),
    path("bench/ceiling/drf-platform/", PlatformAuthCeiling.as_view()),
    *api_urlpatterns,
]
