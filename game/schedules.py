"""The game's recurring django-q2 schedules, kept as declared by `ensure_schedules` after every
`migrate` (see GameConfig.ready). Per-zone Nightstorm schedules are not declared here."""

from nightstorm.schedules import ScheduleSpec

GAME_SCHEDULES = [
    # django-q2 fires a schedule at most about once a minute, so the task itself runs a tick
    # every NIGHTSTORM_COMBAT_TICK_SECONDS for just under a minute.
    ScheduleSpec("game:combat_tick", "game.tasks.combat_tick", minutes=1),
    ScheduleSpec("game:arrivals", "game.tasks.apply_arrivals", minutes=1),
]
