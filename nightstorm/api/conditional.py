"""`If-Match` / `ETag` for versioned resources: the ETag is `"<n>"`, a version the resource
chooses (usually `version`; a jackpot pool uses its `config_version`, which bets do not move)."""

import re

from nightstorm.errors import InvalidInput, PreconditionRequired

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]{1,10})"?\s*$')


def etag_for(version: int) -> str:
    return f'"{version}"'


def expected_version(request) -> int:
    """The version named by `If-Match`: 428 when missing, 400 when it is not a version."""
    header = request.headers.get("If-Match")
    if header is None:
        raise PreconditionRequired()
    match = _ETAG.match(header)
    if not match:
        raise InvalidInput('If-Match must be a version ETag such as "3".', code="invalid_if_match")
    return int(match.group(1))
