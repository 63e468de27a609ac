"""A game master's shift in the admin, in a real browser (Playwright on Debian's chromium).

Logs in, reads the dashboard, finds a player, opens a Nightstorm for a zone and watches its
combats fill, edits a jackpot pool from two sessions at once (the second save is refused and
says why), retries a dead reward payment. Every step checks what the page says, that the change
went through the services (rows, audit entries), and saves a screenshot in the folder printed
at the start (`NIGHTSTORM_SCREENSHOTS`, else `.screenshots/admin/` in the checkout).

Never downloads a browser: Debian's `chromium` is installed with apt-get when the test runs as
root and it is missing; otherwise the test is skipped, saying so.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH = 1400  # the admin must fit a 1,400 px wide screen without cutting columns off
GM_PASSWORD = "gm-passw0rd-for-the-browser"

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still
# plain synchronous code, which Django would otherwise refuse next to a running loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def ensure_chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Debian's chromium is not installed and apt-get cannot install it here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def shots():
    folder = Path(os.environ.get("NIGHTSTORM_SCREENSHOTS") or ROOT / ".screenshots" / "admin")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    print(f"\nadmin screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    path = ensure_chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def world(transactional_db):
    from game.storms import schedules
    from game.world import seed_world
    from jackpot.services import ensure_default_pools

    seed_world(demo=True)
    schedules.check_schedules()
    ensure_default_pools()
    get_user_model().objects.create_superuser("gm", "gm@example.com", GM_PASSWORD)


class GameMaster:
    """One logged-in admin session (its own browser context and cookies)."""

    def __init__(self, browser, base_url: str, shots: Path):
        self.context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        self.page = self.context.new_page()
        self.base, self.shots = base_url, shots
        self.page.goto(f"{base_url}/admin/login/")
        self.page.fill("#id_username", "gm")
        self.page.fill("#id_password", GM_PASSWORD)
        self.submit("input[type=submit]")
        self.page.wait_for_selector("#dashboard")

    def submit(self, selector: str):
        """Click something that posts a form, and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)

    def go(self, path: str):
        self.page.goto(f"{self.base}{path}")

    def shot(self, name: str):
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def message(self) -> str:
        return self.page.locator("ul.messagelist").inner_text().lower()

    def fits_the_screen(self):
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTH, f"{self.page.url} is {width} px wide: columns are cut off"


def audited(obj, words: str) -> LogEntry:
    entries = LogEntry.objects.filter(object_id=str(obj.pk), change_message__contains=words)
    entry = entries.select_related("user").first()
    assert entry is not None, f"no audit entry {words!r} for {obj}"
    assert entry.user.username == "gm"
    return entry


def test_a_game_masters_shift(world, live_server, browser, shots):
    from game import registration
    from game.models import Combat, NightstormEvent, Player, Reward, Zone
    from game.storms import events
    from jackpot.models import JackpotPool
    from nightstorm.models import OutboxJob

    gm = GameMaster(browser, live_server.url, shots)
    page = gm.page

    # The dashboard: what is running, what is stuck, what comes next.
    assert "Nightstorm administration" in page.inner_text("#site-name")
    for panel in ("health", "next-nightstorms", "running-combats", "outbox", "rewards", "pools"):
        assert page.locator(f"#panel-{panel}").count() == 1, panel
    assert "UTC" in page.inner_text("#panel-next-nightstorms")
    gm.fits_the_screen()
    gm.shot("01-dashboard")

    # Find a player by name; their page shows where they are, their seat, gold and bets.
    gm.go("/admin/game/player/")
    page.fill("#searchbar", "borin")
    page.press("#searchbar", "Enter")
    page.click("#result_list a:text('borin')")
    page.wait_for_selector("#panel-journey")
    for panel in ("journey", "seat", "rewards", "bets"):
        assert page.locator(f"#panel-{panel}").count() == 1, panel
    assert "1.00" in page.inner_text(".field-gold_shown")  # 100 minor units of gold
    gm.shot("02-player")

    # Open a Nightstorm in a zone, from the zone's page, sorted by next Nightstorm first.
    gm.go("/admin/game/zone/?o=3")
    gm.fits_the_screen()
    gm.shot("03-zones-by-next-nightstorm")
    zone = Zone.objects.get(code="BRI1")
    gm.go(f"/admin/game/zone/{zone.pk}/change/")
    gm.submit("button[name=open_now]")
    assert "opened nightstorm in" in gm.message()
    event = NightstormEvent.objects.get(zone=zone)
    audited(zone, "Opened a Nightstorm now")
    assert page.locator("#panel-recent-events").inner_text().count("open") >= 1
    gm.shot("04-zone-nightstorm-opened")

    # Players take seats (through the same service as the API); the combat page fills up.
    combat = Combat.objects.filter(event=event).order_by("index").first()
    gm.go(f"/admin/game/combat/{combat.pk}/change/")
    assert "Nobody has a seat yet" in page.inner_text("#panel-seats")
    players = {p.name: p for p in Player.objects.all()}
    # The demo players stand in the zone already: joining takes a player in the combat's zone.
    Player.objects.filter(name__in=("aria", "borin", "cael")).update(zone=zone)
    registration.register(player_id=players["aria"].pk, combat_id=combat.pk)
    page.reload()
    assert "1 of 10 seats taken" in page.inner_text("#panel-seats")
    for name in ("borin", "cael"):
        registration.register(player_id=players[name].pk, combat_id=combat.pk)
    page.reload()
    seats = page.inner_text("#panel-seats")
    assert "3 of 10 seats taken" in seats
    assert "100 (enters with)" in seats  # hp before the start: what each player brings
    gm.shot("05-combat-filling")

    # A game master takes one seat away; the combat's page says so and the log has it.
    gm.submit(f"button[name=remove_player][value='{players['cael'].pk}']")
    assert "cael no longer has a seat" in gm.message()
    assert "2 of 10 seats taken" in page.inner_text("#panel-seats")
    audited(combat, "Removed cael")

    # Start it by the button; the turn log fills as the orchestrator plays.
    gm.submit("button[name=start_combat_now]")
    assert "the combat is running" in gm.message()
    combat.refresh_from_db()
    assert combat.status == Combat.Status.RUNNING
    audited(combat, "status open → running")
    gm.shot("06-combat-running")

    # Two sessions edit the same pool: the first save wins, the second is told why it lost.
    other = GameMaster(browser, live_server.url, shots)
    pool = JackpotPool.objects.get(group="minor")
    for session in (gm, other):
        session.go(f"/admin/jackpot/jackpotpool/{pool.pk}/change/")
    gm.page.fill("#id_contribution_rate_bp", "150")
    gm.submit("input[name=_save]")
    assert "was changed successfully" in gm.message()
    other.page.fill("#id_seed_amount", "12345")
    other.submit("input[name=_save]")
    error = " ".join(other.page.locator(".errorlist").all_inner_texts())
    assert "Someone else changed this pool's configuration" in error
    other.shot("07-pool-edit-conflict")
    pool.refresh_from_db()
    assert pool.contribution_rate_bp == 150 and pool.seed_amount != 12345
    audited(pool, "→ 150")
    gm.go("/admin/jackpot/jackpotpool/")
    listing = page.inner_text("#result_list")
    assert "1.50 %" in listing
    assert listing.index("Minor") < listing.index("Major") < listing.index("Mega")
    gm.shot("08-pools")
    other.context.close()

    # A reward whose payment died: the game master retries it from the reward's page.
    events.finish_combat(combat_id=combat.pk, outcome=Combat.Outcome.VICTORY)
    reward = Reward.objects.filter(combat=combat).select_related("job").first()
    OutboxJob.objects.filter(pk=reward.job_id).update(
        state=OutboxJob.State.DEAD, attempts=6, last_error="gold service timed out"
    )
    gm.go("/admin/")
    assert "1 dead payment" in page.inner_text("#panel-rewards")
    for listing_url in (
        "/admin/game/combat/",
        "/admin/game/player/",
        "/admin/game/reward/",
        "/admin/jackpot/ledgerentry/",
        "/admin/nightstorm/outboxjob/",
    ):
        gm.go(listing_url)
        gm.fits_the_screen()
    gm.go("/admin/game/reward/?payment=dead")
    page.click("#result_list tbody tr:first-child th a")
    gm.submit("button[name=retry_payment]")
    assert "payment queued" in gm.message()
    job = OutboxJob.objects.get(pk=reward.job_id)
    assert job.state == OutboxJob.State.PENDING and job.attempts == 0
    audited(reward, "job dead → pending")
    gm.shot("09-reward-retried")

    # The audit log lists every action with who did it.
    gm.go("/admin/admin/logentry/")
    log = page.inner_text("#result_list")
    for words in ("Opened a Nightstorm now", "Removed cael", "Started now", "Retried"):
        assert words in log
    gm.fits_the_screen()
    gm.shot("10-audit-log")

    gm.go("/admin/")
    assert timezone.now().strftime("%Y-%m-%d") in page.inner_text("#panel-running-combats") or (
        "No combat is running" in page.inner_text("#panel-running-combats")
    )
    gm.fits_the_screen()
    gm.shot("11-dashboard-after")
    gm.context.close()
