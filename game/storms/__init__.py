"""The Nightstorm lifecycle, in the order it happens: a zone fires a storm, players register,
the combats start, the orchestrator advances them a turn per tick, they finish and pay.

- `schedules.py`: every zone keeps exactly one django-q2 schedule `nightstorm:<code>`,
  staggered over the interval; `check_schedules()` creates, repairs (old function paths
  included) and deletes them, and keeps the game's own recurring schedules as declared.
- `firing.py`: the django-q2 entry points: `fire_nightstorm()` (the schedule's job, idempotent
  per (zone, slot), overdue slots coalesced), `trigger_now()`, `watchdog()`.
- `events.py`: the event and combat lifecycle: `open_nightstorm()`, `start_event()`,
  `start_due_events()`, `start_combat()`, `cancel_combat()`, `finish_combat()`,
  `settle_events()`.
- `orchestrator.py`: `process_active_combats()` (one tick: every due combat one turn, SKIP
  LOCKED and the `next_turn_at` guard, the turn log) and `Orchestrator` (the loop of
  `manage.py run_orchestrator`, its heartbeat).
- `health.py`: `/health/`'s `scheduler` and `orchestrator` checks.

Registration itself lives in `game.registration`, the fight rules in `game.fight`, the payouts
in `game.rewards`.
"""
