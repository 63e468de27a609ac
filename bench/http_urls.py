"""The API's URLs plus the two ceilings the HTTP benchmark measures beside it:

* `bench/ceiling/django/`: a minimal Django view (a small JSON body) through the same
  middleware stack, the most any endpoint could serve on this server;
* `bench/ceiling/drf/`: a DRF view with token auth and the default renderer (one query: the
  token and its user), the floor every authenticated API request pays.

Served only by the benchmark's gunicorn (`bench.http_settings`), never by production.
"""

from django.http import JsonResponse
from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from nightstorm.urls import handler400, handler403, handler404, handler500  # noqa: F401
from nightstorm.urls import urlpatterns as api_urlpatterns


def django_ceiling(request):
    return JsonResponse({"ok": True})


class DrfCeiling(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"ok": True, "user": request.user.pk})


urlpatterns = [
    path("bench/ceiling/django/", django_ceiling),
    path("bench/ceiling/drf/", DrfCeiling.as_view()),
    *api_urlpatterns,
]
