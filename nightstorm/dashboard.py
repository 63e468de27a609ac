"""The admin's front page: panels the apps register, each a small table a game master reads at a
glance (platform health, the next Nightstorms, running combats, dead jobs, pools, who is
online).

`nightstorm` knows no game rule, so it only renders: each app registers its panels from its
`admin.py`. A panel that fails shows its error in place instead of breaking the page.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Table:
    """What a panel shows: an optional one-line summary, a table, and links below it. Cells are
    text or already-escaped HTML (`format_html`)."""

    summary: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    empty: str = "Nothing to show."
    links: list[tuple[str, str]] = field(default_factory=list)  # (url, text)
    state: str = ""  # ok / degraded / down: colours the panel's title


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    build: Callable[[object], Table]  # called with the request
    order: int = 100


_panels: dict[str, Panel] = {}


def register(key: str, title: str, *, order: int = 100):
    """Decorator: `build(request) -> Table` becomes a panel of the dashboard."""

    def decorate(build):
        _panels[key] = Panel(key, title, build, order)
        return build

    return decorate


def render_panels(request) -> list[dict]:
    shown = []
    for panel in sorted(_panels.values(), key=lambda p: (p.order, p.key)):
        try:
            table, error = panel.build(request), ""
        except Exception as exc:  # one broken panel must not hide the others
            log.exception("dashboard panel %s failed", panel.key)
            table, error = Table(state="down"), f"{type(exc).__name__}: {exc}"[:300]
        shown.append({"key": panel.key, "title": panel.title, "table": table, "error": error})
    return shown
