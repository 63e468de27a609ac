"""Token authentication that refuses malformed keys before they reach the database, and whose
lookup is compiled once (it runs on every authenticated request)."""

import functools
import re

from rest_framework import authentication, exceptions

from nightstorm.sql import CompiledQuery

_KEY = re.compile(r"^[0-9a-f]{40}$")


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token auth, but a key that cannot be a token (wrong length, NUL bytes, non-hex)
    is refused as invalid instead of being looked up (PostgreSQL rejects NUL in text)."""

    def token_queryset(self):
        """The tokens looked up, with their users; a subclass may load more in the same
        query (an app's own data about the caller)."""
        return self.get_model().objects.select_related("user")

    def authenticate_credentials(self, key):
        if not _KEY.match(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        found = _lookup(type(self)).fetch(key=key)
        if not found:
            raise exceptions.AuthenticationFailed("Invalid token.")
        (token,) = found
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token


@functools.cache
def _lookup(cls) -> CompiledQuery:
    """The class's token query, its SQL built once: building it cost as much as running it."""
    return CompiledQuery(lambda key: cls().token_queryset().filter(key=key), "key")
