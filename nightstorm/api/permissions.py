"""Permissions shared by the apps."""

import hmac

from django.conf import settings
from rest_framework.permissions import BasePermission


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of two secrets; any string (non-ASCII included) is safe."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "service") and token else None


class IsStaff(BasePermission):
    message = "Staff only."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def service_token_or_staff(setting: str):
    """A permission class: staff, or a caller presenting `Authorization: Bearer <settings.X>`."""

    class ServiceTokenOrStaff(BasePermission):
        message = "A service token or a staff account is required."

        def has_permission(self, request, view):
            expected = getattr(settings, setting, "")
            token = bearer_token(request)
            if tokens_match(token, expected):
                request.service_caller = f"service:{setting}"
                return True
            return IsStaff().has_permission(request, view)

    ServiceTokenOrStaff.service_token_setting = setting  # the schema names the bearer scheme
    ServiceTokenOrStaff.__name__ = f"ServiceTokenOrStaff_{setting}"
    return ServiceTokenOrStaff
