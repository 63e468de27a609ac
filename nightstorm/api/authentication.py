"""Token authentication that refuses malformed keys before they reach the database."""

import re

from rest_framework import authentication, exceptions

_KEY = re.compile(r"^[0-9a-f]{40}$")


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token auth, but a key that cannot be a token (wrong length, NUL bytes, non-hex)
    is refused as invalid instead of being looked up (PostgreSQL rejects NUL in text)."""

    def authenticate_credentials(self, key):
        if not _KEY.match(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
