"""`manage.py run_orchestrator` as real processes on the test database: two at once, one
SIGKILLed mid-tick and replaced, one stopped with SIGTERM. The turn log (`CombatTurn`) shows
every combat's turns one tick apart, none lost, none doubled.

Each has a control beside it showing the check catches the old behaviour: the loop hosted by a
once-a-"minute" schedule for a budget shorter than its period leaves gaps of several ticks
(the 18.8 s between two 5 s turns of the issue), a turn claim without its guard doubles turns
(tests/game/test_combat_turns.py), and a loop without the SIGTERM handler dies mid-tick.
"""

import re
import signal
import time
from collections import Counter

import pytest
from django.utils import timezone

from game.models import Combat, CombatTurn
from game.storms.events import start_due_events
from game.storms.orchestrator import period_end, process_active_combats
from nightstorm.models import Heartbeat
from tests.game.factories import ZoneFactory, make_running_combats
from tests.game.turnlog import check_turn_log
from tests.processes import Platform

SUMMARY = re.compile(r"run_orchestrator: (\d+) tick\(s\), (\d+) turn\(s\) advanced")
TICK_LINE = re.compile(r"tick: (?P<advanced>\d+) advanced of (?P<due>\d+) due, ")


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def orchestrators_beating(n: int):
    return lambda: Heartbeat.objects.filter(name__startswith="orchestrator:").count() >= n


def fighting_combats(n: int, seats: int = 2) -> list:
    """`n` running combats that last far longer than the test, due now."""
    zone = ZoneFactory(boss_attack=1)
    combats = make_running_combats(n, seats=seats, zone=zone, boss_hp=1_000_000)
    ids = [c.pk for c in combats]
    Combat.objects.filter(pk__in=ids).update(next_turn_at=timezone.now())
    return ids


def turns_logged(ids) -> int:
    return CombatTurn.objects.filter(combat_id__in=ids).count()


def mid_tick(ids):
    """True while a tick is half done: some combats have their turn of it, others not yet."""
    return lambda: turns_logged(ids) % len(ids) != 0


def summary_of(platform: Platform, name: str) -> tuple[int, int]:
    found = SUMMARY.search(platform.log(name))
    assert found, platform.log(name)[-2000:]
    return int(found[1]), int(found[2])


@pytest.fixture
def platform(tmp_path):
    started = []

    def start(tick: int, **env):
        p = Platform(
            tmp_path,
            NIGHTSTORM_COMBAT_TICK_SECONDS=tick,
            NIGHTSTORM_COMBAT_MAX_TURNS=10_000,
            **env,
        )
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(timeout=10)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_orchestrators_keep_every_combat_one_tick_apart(platform, settings):
    tick = 1
    p = platform(tick, NIGHTSTORM_COMBAT_BATCH_SIZE=3, NIGHTSTORM_COMBAT_PARALLELISM=2)
    p.manage("orch-a", "run_orchestrator")
    p.manage("orch-b", "run_orchestrator")
    wait_for(orchestrators_beating(2), 30, "both orchestrators to start")
    ids = fighting_combats(24)
    every_combat = Combat.objects.filter(pk__in=ids)
    wait_for(
        lambda: min(every_combat.values_list("turn", flat=True)) >= 16,
        90,
        "16 turns of every combat",
        every=0.2,
    )
    codes = p.stop()
    assert codes == {"orch-a": 0, "orch-b": 0}, (p.log("orch-a")[-1500:], p.log("orch-b")[-1500:])

    check = check_turn_log(ids, period=tick)
    print(f"\ntwo orchestrators: {check.stats()}")
    assert not check.problems, check.problems[:5]
    assert min(Combat.objects.filter(pk__in=ids).values_list("turn", flat=True)) >= 15
    (_, a), (_, b) = summary_of(p, "orch-a"), summary_of(p, "orch-b")
    assert a > 0 and b > 0, "both orchestrators advanced combats"
    assert a + b == check.turns == turns_logged(ids)
    assert not Heartbeat.objects.filter(name__startswith="orchestrator:").exists()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_orchestrator_killed_mid_tick_and_replaced_loses_and_doubles_no_turn(platform):
    tick = 2
    p = platform(tick, NIGHTSTORM_COMBAT_BATCH_SIZE=1, NIGHTSTORM_COMBAT_PARALLELISM=1)
    first = p.manage("orch-a", "run_orchestrator")
    wait_for(orchestrators_beating(1), 30, "the orchestrator to start")
    ids = fighting_combats(40, seats=1)
    wait_for(lambda: turns_logged(ids) >= 3 * len(ids), 30, "three ticks")
    wait_for(mid_tick(ids), 30, "a tick half done", every=0.002)
    p.signal("orch-a", signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = turns_logged(ids)
    assert killed_at % len(ids), "killed mid-tick: some combats still wait for this turn"
    p.manage("orch-b", "run_orchestrator")
    wait_for(lambda: turns_logged(ids) >= killed_at + 3 * len(ids), 40, "three more ticks")
    codes = p.stop()
    assert codes["orch-a"] == -signal.SIGKILL and codes["orch-b"] == 0, p.log("orch-b")[-1500:]

    check = check_turn_log(ids, period=tick)
    print(f"\nSIGKILL and replace: {check.stats()}")
    assert not check.missing and not check.doubled, check.problems[:5]
    # Late turns only where the replacement took over: at most one stretch per combat (how
    # long it is depends on how fast the new process starts on this machine).
    late = Counter(combat for combat, *_ in check.gaps)
    assert max(late.values(), default=0) <= 1, check.gaps[:5]
    # The killed one never removed its heartbeat (pruned after an hour); the clean one did.
    left = list(Heartbeat.objects.filter(name__startswith="orchestrator:").values_list("name"))
    assert left == [(left[0][0],)] and left[0][0].endswith(f":{first.pid}")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sigterm_finishes_the_tick_and_exits_0_with_a_summary(platform):
    tick = 2
    p = platform(tick, NIGHTSTORM_COMBAT_BATCH_SIZE=1, NIGHTSTORM_COMBAT_PARALLELISM=1)
    proc = p.manage("orch", "run_orchestrator", "-v", "2")
    wait_for(orchestrators_beating(1), 30, "the orchestrator to start")
    ids = fighting_combats(60, seats=1)
    wait_for(lambda: turns_logged(ids) >= len(ids), 30, "a first tick")
    wait_for(mid_tick(ids), 30, "a tick half done", every=0.002)
    p.signal("orch", signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    logged = turns_logged(ids)
    lines = p.log("orch").strip().splitlines()
    assert "; stopped by SIGTERM" in lines[-1], lines[-3:]
    ticks = [line for line in lines if TICK_LINE.match(line)]
    # The tick in progress was finished: it advanced every combat it found due. (A tick that
    # overran its period on a loaded machine finds only some combats due: not a multiple.)
    finished = TICK_LINE.match(ticks[-1])
    assert finished and finished["advanced"] == finished["due"], ticks[-3:]
    assert sum(int(TICK_LINE.match(line)["advanced"]) for line in ticks) == logged
    assert summary_of(p, "orch")[1] == logged
    assert not Heartbeat.objects.filter(name__startswith="orchestrator:").exists()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_a_loop_without_the_sigterm_handler_dies_mid_tick(platform):
    """The control: a tick loop that leaves SIGTERM to its default dies with a tick half
    done and no summary: the check above would fail."""
    tick = 2
    p = platform(tick)
    loop = (
        "import time\n"
        "from django.utils import timezone\n"
        "from game.storms.orchestrator import period_end, process_active_combats\n"
        "while True:\n"
        "    boundary = period_end(timezone.now())\n"
        "    process_active_combats(parallelism=1, batch_size=1)\n"
        "    time.sleep(max(0, (boundary - timezone.now()).total_seconds()) + 0.002)\n"
    )
    proc = p.manage("naive", "shell", "-c", loop)
    ids = fighting_combats(60, seats=1)
    wait_for(lambda: turns_logged(ids) >= len(ids), 30, "a first tick")
    wait_for(mid_tick(ids), 30, "a tick half done", every=0.002)
    p.signal("naive", signal.SIGTERM)
    assert proc.wait(timeout=20) == -signal.SIGTERM
    assert turns_logged(ids) % len(ids) != 0
    assert "run_orchestrator:" not in p.log("naive")


def old_schedule_hosting(*, fire_every_ticks: int, budget_ticks: int, fires: int) -> None:
    """How the loop was hosted before: a schedule fires every `fire_every_ticks` (django-q2's
    "once a minute") and its task ticks at every boundary for a budget shorter than that (55 s
    of 60), then nothing happens until the next fire."""
    from django.conf import settings

    tick = settings.NIGHTSTORM_COMBAT_TICK_SECONDS
    first_fire = period_end(timezone.now())
    for n in range(fires):
        fire_at = first_fire.timestamp() + n * fire_every_ticks * tick
        time.sleep(max(0.0, fire_at - timezone.now().timestamp()))
        deadline = time.monotonic() + budget_ticks * tick
        while True:  # the old run_ticks(duration=budget)
            start_due_events()
            process_active_combats()
            wait = (period_end(timezone.now()) - timezone.now()).total_seconds()
            if time.monotonic() + wait >= deadline:
                break
            time.sleep(max(0.0, wait) + 0.01)


@pytest.mark.slow
@pytest.mark.django_db
def test_control_the_schedule_hosted_loop_leaves_gaps_of_several_ticks(settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    ids = fighting_combats(4)
    old_schedule_hosting(fire_every_ticks=6, budget_ticks=2, fires=2)
    check = check_turn_log(ids, period=1)
    print(f"\nschedule-hosted loop: {check.stats()}")
    assert check.gaps and not check.missing and not check.doubled
    assert max(gap for *_, gap in check.gaps) > 2
