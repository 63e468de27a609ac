"""The one HTML page outside the admin: `/`, where a newcomer (and the admin's "View site")
lands, with links to the API docs, the admin and the health check."""

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def landing(request):
    return render(request, "landing.html", {"debug": settings.DEBUG})
