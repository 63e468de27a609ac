"""How the admin shows values to a person: times with seconds and time zone (and how long ago
or ahead), money in major units with separators, basis points as percentages, durations."""

from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

EMPTY = "—"


def stamp(value: datetime | None) -> str:
    """`2026-12-02 14:05:33 UTC`: seconds and the zone, in the site's time zone."""
    if value is None:
        return EMPTY
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def relative(value: datetime | None, now: datetime | None = None) -> str:
    """`3 minutes ago` / `in 2 hours, 5 minutes` / `just now`."""
    if value is None:
        return ""
    now = now or timezone.now()
    if abs((value - now).total_seconds()) < 60:
        return "just now" if value <= now else "in under a minute"
    if value <= now:
        return f"{timesince(value, now, depth=2)} ago"
    return f"in {timeuntil(value, now, depth=2)}"


def when(value: datetime | None, now: datetime | None = None):
    """The time with seconds and zone, then how far it is from now, muted."""
    if value is None:
        return EMPTY
    return format_html(
        '<span title="{}">{}</span> <span class="quiet">({})</span>',
        value.isoformat(),
        stamp(value),
        relative(value, now),
    )


def money(minor: int | None) -> str:
    """Minor units (cents) as `12,345.67`; integers all the way, no float rounding."""
    if minor is None:
        return EMPTY
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(int(minor)), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def percent_bp(basis_points: int | None) -> str:
    """Basis points as a percentage: 150 -> `1.50 %`."""
    if basis_points is None:
        return EMPTY
    whole, rest = divmod(int(basis_points), 100)
    return f"{whole}.{rest:02d} %"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return EMPTY
    seconds = int(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
