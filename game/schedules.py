"""The game's recurring django-q2 schedules, kept as declared by `ensure_schedules` after every
`migrate` (see GameConfig.ready). The per-zone Nightstorm schedules are kept by
`game.nightstorm_schedules`."""

from nightstorm.schedules import ScheduleSpec

GAME_SCHEDULES = [
    # django-q2 fires a schedule at most about once a minute, so the task itself runs a tick
    # every NIGHTSTORM_COMBAT_TICK_SECONDS for just under a minute.
    ScheduleSpec("game:combat_tick", "game.tasks.combat_tick", minutes=1),
    ScheduleSpec("game:arrivals", "game.tasks.apply_arrivals", minutes=1),
    # The watchdog behind the per-zone Nightstorm schedules (see game.nightstorm_schedules).
    ScheduleSpec("game:schedule_watchdog", "game.storm_tasks.watchdog", minutes=5),
]
