"""What must still hold after the workload, read from the database (and Redis) once every
process has stopped. Each check returns (name, ok, detail)."""

import hashlib
import io

from django.core.management import CommandError, call_command
from django.db.models import Count, F, Q, Sum

Check = tuple[str, bool, str]


def _command(name: str) -> Check:
    out = io.StringIO()
    try:
        call_command(name, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return name, False, str(exc)
    return name, True, out.getvalue().strip().splitlines()[-1]


def combat_capacity() -> Check:
    from game.models import Combat

    counted = Combat.all_objects.annotate(taken=Count("registrations"))
    over = list(counted.filter(taken__gt=F("capacity")).values_list("pk", "taken", "capacity"))
    miscounted = list(counted.exclude(seats=F("taken")).values_list("pk", "seats", "taken"))
    total = counted.count()
    seated = counted.aggregate(n=Sum("taken"))["n"] or 0
    full = counted.filter(taken=F("capacity")).count()
    if over or miscounted:
        detail = f"over capacity: {over[:5]}; seat counter != registrations: {miscounted[:5]}"
        return "combat capacity", False, detail
    return (
        "combat capacity",
        True,
        f"{total} combats, {seated} seats, {full} full; none over capacity; every seat counter "
        "= its registrations",
    )


def one_active_seat() -> Check:
    from game.models import Combat, Registration

    doubled = list(
        Registration.objects.filter(active=True)
        .values("player")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("player", "n")
    )
    stale = Registration.objects.filter(active=True).filter(
        ~Q(combat__status__in=[Combat.Status.OPEN, Combat.Status.RUNNING])
    )
    stale_n = stale.count()
    active = Registration.objects.filter(active=True).count()
    if doubled or stale_n:
        return (
            "one active seat per player",
            False,
            f"players with several active seats: {doubled[:5]}; active seats in ended combats: "
            f"{stale_n}",
        )
    return "one active seat per player", True, f"{active} active seats, none doubled"


def rewards_paid_once() -> Check:
    """Every paid reward has exactly one ledger credit of its amount; no credit without a paid
    reward; unique (combat, player)."""
    from game.models import GoldEntry, GoldKind, Reward

    rewards = {
        f"reward:{pk}": (gold, paid is not None)
        for pk, gold, paid in Reward.objects.values_list("pk", "gold", "paid_at")
    }
    entries: dict[str, list[int]] = {}
    for reference, amount in GoldEntry.objects.filter(kind=GoldKind.REWARD).values_list(
        "reference", "amount"
    ):
        entries.setdefault(reference, []).append(amount)
    twice = [r for r, amounts in entries.items() if len(amounts) > 1]
    orphan = [r for r in entries if r not in rewards or not rewards[r][1]]
    missing = [r for r, (_, paid) in rewards.items() if paid and r not in entries]
    wrong = [r for r, (gold, paid) in rewards.items() if paid and entries.get(r, [gold]) != [gold]]
    doubled = (
        Reward.objects.values("combat", "player").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    paid = sum(1 for _, p in rewards.values() if p)
    ok = not (twice or orphan or missing or wrong or doubled)
    detail = (
        f"{len(rewards)} rewards, {paid} paid, each credited once"
        if ok
        else f"credited twice {twice[:3]}, credit without a paid reward {orphan[:3]}, paid "
        f"without credit {missing[:3]}, wrong amount {wrong[:3]}, two rewards for one seat "
        f"{doubled}"
    )
    return "rewards paid once", ok, detail


def _operation_id(prefix: str, caller, key: str) -> str:
    # As jackpot.api._operation_id: the same key from the same caller names one operation.
    return f"{prefix}:" + hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()[:48]


def keys_applied_once(contribution_keys: list, win_keys: list) -> Check:
    """Every Idempotency-Key answered 201 (first answer, replays and racing duplicates alike)
    was applied exactly once: one contribution or win row under its operation id."""
    from jackpot.models import Contribution, Win

    def rows(model, ids: list[str]) -> tuple[int, int]:
        found = 0
        for i in range(0, len(ids), 2000):
            found += model.objects.filter(operation_id__in=ids[i : i + 2000]).count()
        return found, len(set(ids))

    c_found, c_keys = rows(
        Contribution, [_operation_id("contribution", user, key) for user, key in contribution_keys]
    )
    w_found, w_keys = rows(Win, [_operation_id("win", "service", key) for key in win_keys])
    ok = c_found == c_keys and w_found == w_keys
    return (
        "idempotency keys applied once",
        ok,
        f"contributions: {c_keys} keys, {c_found} rows; wins: {w_keys} keys, {w_found} rows",
    )


def connections_released(since: float) -> Check:
    """The gateway stopped: no connection of this run is left in the shared store."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return "gateway connections released", True, "no Redis store"
    from django_redis import get_redis_connection

    from connections.store.redis_store import RedisConnectionStore

    conns, _ = RedisConnectionStore(get_redis_connection("default")).load_all()
    left = [c for c in conns if c.protocol == "telnet" and c.connected_at >= since]
    return (
        "gateway connections released",
        not left,
        f"{len(left)} connections of this run left in Redis after the gateway stopped",
    )


def check_all(*, contribution_keys: list, win_keys: list, since: float) -> list[Check]:
    return [
        _command("jackpot_audit"),
        _command("gold_audit"),
        combat_capacity(),
        one_active_seat(),
        rewards_paid_once(),
        keys_applied_once(contribution_keys, win_keys),
        connections_released(since),
    ]
