"""django-q2 entry points of the game. Each tolerates running twice, or two at once.

The combat loop is not a task: it runs in its own process, `manage.py run_orchestrator`
(`game.storms.orchestrator`). The Nightstorm schedules' entry points are in
`game.storms.firing`.
"""

from game import travel


def apply_arrivals() -> int:
    """Land every journey that is due."""
    return travel.apply_arrivals()
