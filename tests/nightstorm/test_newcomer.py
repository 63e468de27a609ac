"""A newcomer's first minutes, as the README tells them: `make run` (run_platform with DEBUG on)
writes a local `.env`, after which every `manage.py` command works in the checkout; `/` is a
landing page; the demo players log in with the documented password; `/health/` does not
report the task cluster missing while its first scheduled beat is still ahead."""

import http.client
import json
import os
import stat
import subprocess
import sys

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from game.world import DEMO_PASSWORD, DEMO_PLAYERS
from nightstorm.management.commands.run_platform import write_env_file
from tests.nightstorm.test_run_platform import ROOT, health, run_platform  # noqa: F401

PLATFORM_COMMANDS = ("run_platform", "run_orchestrator", "seed_world", "ensure_schedules")


def test_the_env_file_has_a_fresh_secret_and_debug_on_and_is_never_overwritten(tmp_path):
    path = tmp_path / ".env"
    assert write_env_file(path)
    text = path.read_text()
    assert "DEBUG=1" in text
    secret = next(line for line in text.splitlines() if line.startswith("SECRET_KEY="))
    assert len(secret) > len("SECRET_KEY=") + 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not write_env_file(path)
    assert path.read_text() == text
    other = tmp_path / "other.env"
    write_env_file(other)
    assert secret not in other.read_text()


def manage(*args, env_file, tmp_path):
    """`manage.py` as a newcomer types it: no DEBUG, no SECRET_KEY in the environment."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "NIGHTSTORM_ENV_FILE": str(env_file),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'newcomer.sqlite3'}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_after_the_env_file_every_command_works_and_help_lists_the_platform(tmp_path):
    env_file = tmp_path / ".env"
    before = manage("help", env_file=env_file, tmp_path=tmp_path)
    assert "run_platform" not in before.stdout  # without settings Django hides them
    write_env_file(env_file)
    listed = manage("help", env_file=env_file, tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for command in PLATFORM_COMMANDS:
        assert command in listed.stdout
    checked = manage("check", env_file=env_file, tmp_path=tmp_path)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.django_db
def test_demo_players_log_in_with_the_documented_password(api_client):
    call_command("seed_world", demo=True, verbosity=0)
    for name, _zone in DEMO_PLAYERS:
        assert authenticate(username=name, password=DEMO_PASSWORD) is not None
        assert authenticate(username=name, password="") is None
    response = api_client.post(
        "/api/v1/auth/token/", {"username": "aria", "password": DEMO_PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    assert len(response.json()["token"]) == 40


@pytest.mark.django_db
def test_the_seed_sets_a_password_on_an_account_left_without_one_but_keeps_a_chosen_one():
    users = get_user_model().objects
    users.create(username="aria", password="")  # an empty hash: "usable", yet nobody gets in
    users.create_user(username="borin", password="borins-own-passw0rd")
    call_command("seed_world", demo=True, verbosity=0)
    assert authenticate(username="aria", password=DEMO_PASSWORD)
    assert authenticate(username="borin", password="borins-own-passw0rd")
    assert not authenticate(username="borin", password=DEMO_PASSWORD)


@pytest.mark.django_db
def test_the_landing_page_links_the_docs_the_admin_and_health(client, admin_user):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for link in ('href="/api/docs/"', 'href="/admin/"', 'href="/health/"'):
        assert link in page
    client.force_login(admin_user)
    admin_page = client.get("/admin/").content.decode()
    assert 'href="/">View site' in admin_page
    assert "Nightstorm administration" in admin_page


@pytest.mark.slow
def test_make_run_writes_the_env_file_beats_at_start_and_the_demo_players_log_in(
    run_platform,  # noqa: F811
    tmp_path,
):
    env_file = tmp_path / ".env"
    platform = run_platform(seed=True, DEBUG="1", SECRET_KEY="", NIGHTSTORM_ENV_FILE=str(env_file))
    first = platform.wait_until(lambda: health(platform.port), 90, "/health/ to answer")
    # The cluster's first scheduled beat is up to a minute away; the start beat covers it.
    assert first["checks"]["task_cluster"]["state"] == "ok", first
    assert "DEBUG=1" in env_file.read_text()
    assert f"wrote {env_file}" in platform.log()

    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=10)
    conn.request(
        "POST",
        "/api/v1/auth/token/",
        body=json.dumps({"username": "cael", "password": DEMO_PASSWORD}),
        headers={"Content-Type": "application/json"},
    )
    answer = conn.getresponse()
    assert answer.status == 200, answer.read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()


def first_steps_script() -> str:
    """The shell block under "First steps" in docs/api.md, exactly as a reader copies it."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## First steps", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_first_steps_in_the_api_docs_work_as_written(run_platform, tmp_path):  # noqa: F811
    env_file = tmp_path / ".env"
    database = f"sqlite:///{tmp_path / 'platform.sqlite3'}"
    platform = run_platform(seed=True, DEBUG="1", SECRET_KEY="", NIGHTSTORM_ENV_FILE=str(env_file))
    platform.wait_until(lambda: health(platform.port), 90, "/health/ to answer")
    script = first_steps_script().replace("127.0.0.1:8000", f"127.0.0.1:{platform.port}")
    script = script.replace(".venv/bin/python", sys.executable)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            # What the checkout's .env and default database are to a reader.
            "NIGHTSTORM_ENV_FILE": str(env_file),
            "DATABASE_URL": database,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"name":"wren"' in out
    assert '"destination":"BRI1"' in out
    assert '"participant_count":1' in out
    assert '"amounts":{"minor":' in out
    assert "Idempotent-Replayed: true" in out
