"""Prometheus metrics of the game app (served at /metrics with the toolkit's)."""

from prometheus_client import Counter, Gauge, Histogram

COMBATS_PER_TICK = Histogram(
    "nightstorm_game_combats_per_tick",
    "Running combats advanced by one orchestrator tick.",
    buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
TURN_SECONDS = Histogram(
    "nightstorm_game_combat_turn_seconds",
    "Time to resolve and commit one combat turn (a batch's time shared by its combats).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TICK_SECONDS = Histogram(
    "nightstorm_game_tick_seconds",
    "Duration of one orchestrator tick over all due combats.",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TICK_LATENESS = Histogram(
    "nightstorm_tick_lateness_seconds",
    "How late each combat turn ran relative to when it was due (ran at - next_turn_at, "
    "clipped at 0).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TURN_FAILURES = Counter(
    "nightstorm_game_combat_turn_failures_total", "Combat turns that failed and were rolled back."
)
COMBATS_FINISHED = Counter(
    "nightstorm_game_combats_finished_total", "Combats that ended, by outcome.", ["outcome"]
)
REGISTRATIONS = Counter(
    "nightstorm_game_registrations_total", "Combat registration attempts by outcome.", ["outcome"]
)
TRAVELS = Counter("nightstorm_game_travels_total", "Journey starts by outcome.", ["outcome"])
ORCHESTRATOR_BEAT = Gauge(
    "nightstorm_orchestrator_last_beat_timestamp_seconds",
    "When this orchestrator last finished a tick (Unix time); the series leaves with the "
    "process, so no series at all means no orchestrator.",
    multiprocess_mode="livemax",
)
FIRES = Counter("nightstorm_schedule_fires_total", "Nightstorm schedule runs.", ["outcome"])
MISSED_SLOTS = Counter(
    "nightstorm_missed_slots_total",
    "Slots skipped because a schedule was overdue (coalesced into one run).",
    ["zone"],
)
REWARDS_PAID = Counter("nightstorm_game_rewards_paid_total", "Rewards credited to players.")
