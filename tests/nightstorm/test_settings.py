"""Settings come from the environment and fail safe; gunicorn serves the admin's static files."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROD_KEY = "k" * 20 + "-production-secret-9f8e7d6c5b4a3f2e1d0c-abcdefghijklmnop"


def manage(*args, **env_vars):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "NIGHTSTORM_ENV_FILE": "",  # the checkout's .env must not fill in what a test leaves out
        **env_vars,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_secret_key_outside_debug_refuses_to_start():
    result = manage("check")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_debug_gets_a_dev_key():
    assert manage("check", DEBUG="1").returncode == 0


def test_a_malformed_number_names_its_variable():
    result = manage("check", DEBUG="1", NIGHTSTORM_COMBAT_CAPACITY="ten")
    assert result.returncode != 0
    assert "NIGHTSTORM_COMBAT_CAPACITY must be an integer" in result.stderr


def test_task_timeout_must_stay_below_redelivery():
    result = manage("check", DEBUG="1", Q_TIMEOUT="90", Q_RETRY="60")
    assert "Q_TIMEOUT must be lower than Q_RETRY" in result.stderr


def test_production_settings_pass_the_deployment_checklist():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=PROD_KEY,
        ALLOWED_HOSTS="game.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_gunicorn_serves_the_admin_with_its_styles(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "SECRET_KEY": PROD_KEY,
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    port = _free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen(
        [str(gunicorn), "nightstorm.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        page, deadline = None, time.monotonic() + 60
        while page is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2)
            except OSError:
                time.sleep(0.1)
        assert page is not None and page.status == 200
        html = page.read().decode()
        css = html.split('href="/static/admin/css/base.')[1].split('"')[0]
        styles = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/admin/css/base.{css}")
        assert styles.status == 200
        assert styles.headers["Content-Type"].startswith("text/css")
        assert "max-age" in styles.headers["Cache-Control"]
    finally:
        server.terminate()
        server.wait(timeout=10)
