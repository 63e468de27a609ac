"""Real processes: gunicorn with four workers on the test database and Redis. Every answer,
from whichever worker, reflects the latest write — the web tier holds no connection state.

Requests go out eight at a time, each on a fresh TCP connection: a sync worker serves one
request at a time, so eight in flight spread over the workers. gunicorn's access log (its own
`%(p)s` field, nothing added to the responses) shows which workers answered.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.connections.factories import PlayerFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

TOKEN = "web-workers-service-token-0123456789"
REQUESTS = 40
IN_FLIGHT = 8
URL = "/api/v1/connections/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Web:
    def __init__(self, port: int, access_log: Path):
        self.port = port
        self.access_log = access_log

    def request(self, method: str, path: str, body=None) -> tuple[int, dict | None]:
        """One request on a new connection (so the next may reach another worker)."""
        client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            client.request(method, path, body=payload, headers=headers)
            response = client.getresponse()
            data = response.read()
        finally:
            client.close()
        return response.status, json.loads(data) if data else None

    def many(self, method: str, path: str, body=None, count: int = REQUESTS) -> list:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            return list(pool.map(lambda _: self.request(method, path, body), range(count)))

    def workers_seen(self) -> set[str]:
        lines = self.access_log.read_text().splitlines()
        return {line.split()[0] for line in lines if line.strip()}


@pytest.fixture
def web(tmp_path, redis_client):
    db = connection.settings_dict
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "0",
        "SECRET_KEY": "web-workers-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_MANIFEST": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CONNECTIONS_SERVICE_TOKEN": TOKEN,
    }
    access_log = tmp_path / "access.log"
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "nightstorm.wsgi:application",
            "-w",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(access_log),
            "--access-logformat",
            "%(p)s %(m)s %(U)s %(s)s",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Web(port, access_log)
    try:
        deadline = time.monotonic() + 60  # 4 workers booting on a loaded machine
        while True:
            try:
                if server.request("GET", URL)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"gunicorn did not serve: {(tmp_path / 'gunicorn.log').read_text()[-3000:]}"
                )
            time.sleep(0.1)
        server.many("GET", URL, count=2 * IN_FLIGHT)  # every worker has loaded the app
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def everywhere(web: Web, method: str, path: str, body=None) -> list[tuple[int, dict | None]]:
    return web.many(method, path, body)


def test_every_worker_answers_with_the_latest_write(web):
    player = PlayerFactory(name="Vega")
    status, created = web.request("POST", URL, {"protocol": "telnet", "remote_addr": "10.0.0.1"})
    assert status == 201, created
    handle = created["handle"]
    detail = f"{URL}{handle}/"

    for status, body in everywhere(web, "GET", detail):
        assert (status, body["state"], body["player"]) == (200, "connected", None)

    status, bound = web.request("POST", f"{detail}bind/", {"player": "Vega"})
    assert (status, bound["player"]) == (200, str(player.pk))
    for status, body in everywhere(web, "GET", detail):
        assert (status, body["player_name"], body["state"]) == (200, "Vega", "logged_in")
    for status, page in everywhere(web, "GET", URL):
        assert (status, page["count"], page["results"][0]["player_name"]) == (200, 1, "Vega")

    status, patched = web.request("PATCH", f"{detail}metadata/", {"client": "mudlet"})
    assert (status, patched["metadata"]) == (200, {"client": "mudlet"})  # what Redis holds
    for status, body in everywhere(web, "GET", detail):
        assert (status, body["metadata"]) == (200, {"client": "mudlet"})

    status, patched = web.request("PATCH", f"{detail}metadata/", {"client": "tintin", "width": 80})
    assert status == 200
    for status, body in everywhere(web, "GET", detail):
        assert (status, body["metadata"]) == (200, {"client": "tintin", "width": "80"})

    # Twenty PATCHes at once, one key each, through whichever workers: none is lost.
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        answers = list(
            pool.map(lambda i: web.request("PATCH", f"{detail}metadata/", {f"k{i}": i}), range(20))
        )
    assert all(
        status == 200 and body["metadata"][f"k{i}"] == str(i)
        for i, (status, body) in enumerate(answers)
    )
    expected = {"client": "tintin", "width": "80", **{f"k{i}": str(i) for i in range(20)}}
    for status, body in everywhere(web, "GET", detail):
        assert (status, body["metadata"]) == (200, expected)

    assert web.request("DELETE", detail)[0] == 204
    for status, body in everywhere(web, "GET", detail):
        assert (status, body["code"]) == (404, "connection_not_found")
    for status, body in everywhere(web, "PATCH", f"{detail}metadata/", {"client": "ghost"}):
        assert (status, body["code"]) == (404, "connection_not_found")
    for status, body in everywhere(web, "POST", f"{detail}bind/", {"player": "Vega"}):
        assert (status, body["code"]) == (404, "connection_not_found")
    for status, page in everywhere(web, "GET", URL):
        assert (status, page["count"]) == (200, 0)
    assert web.request("DELETE", detail)[0] == 404

    served_by = web.workers_seen()
    assert len(served_by) >= 2, f"only worker(s) {served_by} answered"
