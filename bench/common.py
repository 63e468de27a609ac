"""What every benchmark shares: Django set-up, timing, the result row and the table.

A benchmark module is `bench/bench_<topic>.py` with a `run() -> list[Row]`; `python -m bench`
runs them all (or the ones named on the command line), prints one table and writes the rows to
`bench/results.json`. Each row puts our figure beside a raw baseline measured in the same run
(a plain SQL statement or Redis command doing the same work).
"""

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


def raw_pg(autocommit: bool = True):
    """A plain psycopg connection to the benchmark database, for the raw baselines."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=autocommit,
    )


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nightstorm.settings")
    import django

    django.setup()


@dataclass
class Row:
    """One line of the table.

    `unit` says what the figures are; `higher_is_better` is True for rates (ops/s) and False
    for times (ms). The ratio is ours / baseline for rates and baseline / ours for times, so a
    ratio of 1.0 means "as good as raw" either way. `goal` is the ratio (or, with
    `goal_is_absolute`, our figure) we aim for; None when there is no target.
    """

    work: str
    unit: str
    ours: float
    baseline: float | None
    goal: float | None = None
    higher_is_better: bool = True
    goal_is_absolute: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline or not self.ours:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    def as_json(self) -> dict:
        data = asdict(self)
        data["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return data


def vacuum(*tables: str) -> None:
    """Start each benchmark from compact tables: rows updated thousands of times by the one
    before would otherwise be measured as dead-tuple scans (autovacuum may be off or slow).
    Every table, or only `tables`."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")


def rate(fn: Callable[[], object], *, seconds: float = 2.0, min_ops: int = 50) -> float:
    """Calls per second of `fn` over about `seconds` (after a short warm-up)."""
    for _ in range(min(20, min_ops)):
        fn()
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        fn()
        count += 1
        if count >= min_ops and time.perf_counter() >= deadline:
            break
    return count / (time.perf_counter() - started)


def latencies_ms(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def print_table(rows: list[Row]) -> None:
    header = ("work", "unit", "ours", "raw baseline", "ratio", "goal")
    lines = []
    for r in rows:
        goal = "-"
        if r.goal is not None:
            goal = f"{fmt(r.goal)} {r.unit}" if r.goal_is_absolute else f">= {r.goal:.2f}"
        lines.append((r.work, r.unit, fmt(r.ours), fmt(r.baseline), fmt(r.ratio), goal))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    sep = "  "
    print(sep.join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    print(sep.join("-" * w for w in widths))
    for line in lines:
        print(sep.join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)))
    for r in rows:
        if r.note:
            print(f"  * {r.work}: {r.note}")


@dataclass(frozen=True)
class SeededPlayer:
    name: str
    user_id: int
    player_id: object
    token: str


def ensure_players(names: list[str], password_hash: str, zone_of) -> list[SeededPlayer]:
    """Users (with `password_hash`), players (in `zone_of(index)`) and tokens for `names`, in
    bulk, creating only what is missing; returned in the order of `names`."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from game.models import Player

    User = get_user_model()
    have = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    User.objects.bulk_create(
        [User(username=n, password=password_hash) for n in names if n not in have],
        batch_size=2000,
    )
    User.objects.filter(username__in=names).exclude(password=password_hash).update(
        password=password_hash
    )
    users = dict(User.objects.filter(username__in=names).values_list("username", "pk"))
    players = Player.all_objects.filter(user_id__in=users.values())
    with_player = set(players.values_list("user_id", flat=True))
    Player.objects.bulk_create(
        [
            Player(user_id=users[n], name=n, zone=zone_of(i))
            for i, n in enumerate(names)
            if users[n] not in with_player
        ],
        batch_size=2000,
    )
    tokens = Token.objects.filter(user_id__in=users.values())
    with_token = set(tokens.values_list("user_id", flat=True))
    Token.objects.bulk_create(
        [
            Token(user_id=users[n], key=Token.generate_key())
            for n in names
            if users[n] not in with_token
        ],
        batch_size=2000,
    )
    keys = dict(tokens.values_list("user_id", "key"))
    player_ids = dict(players.values_list("user_id", "pk"))
    return [SeededPlayer(n, users[n], player_ids[users[n]], keys[users[n]]) for n in names]


def listed(figures: list[float]) -> str:
    """Every round's figure, for a row's note: "1172, 1354, 1441"."""
    return ", ".join(f"{x:.0f}" for x in figures)
