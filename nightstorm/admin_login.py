"""Brute-force protection of the admin login (django-axes).

Failed admin logins are recorded in the database (every web process sees the same count);
after `AXES_FAILURE_LIMIT` failures from one address the admin login refuses that address for
`AXES_COOLOFF_MINUTES`, correct password or not. The API's token login has its throttle
(`THROTTLE_AUTH`) and the gateway its per-address limit, so axes watches the admin site only.
"""

from axes import signals
from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from django.contrib.auth.signals import user_login_failed


class AdminLoginBackend(AxesStandaloneBackend):
    """axes's lockout check. `authenticate()` without a request (the gateway's logins) is not
    an admin login: axes would refuse it outright, so it is passed on to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class AdminLoginHandler(AxesDatabaseHandler):
    """axes's database handler, counting failed admin logins only: a failed API token login
    or gateway login (no request) must not lock game masters out of the admin."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        if request is None or not self.is_admin_request(request):
            return
        super().user_login_failed(sender, credentials, request, **kwargs)


def _on_login_failed(sender, credentials, request=None, **kwargs):
    if request is not None:  # a gateway login has none, and is not axes's business
        signals.handle_user_login_failed(
            sender=sender, credentials=credentials, request=request, **kwargs
        )


def connect_signals() -> None:
    """Route failed logins to axes only when they come with a request: axes's own receiver
    logs an error for every request-less failure (each wrong gateway password)."""
    user_login_failed.disconnect(signals.handle_user_login_failed)
    user_login_failed.connect(_on_login_failed, dispatch_uid="nightstorm.admin_login")
