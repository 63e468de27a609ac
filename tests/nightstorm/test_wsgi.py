"""The WSGI module a web worker imports leaves what it loaded out of the collector's passes."""

import subprocess
import sys

from tests.processes import ROOT

PROBE = """
import gc, nightstorm.wsgi
print(gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_importing_the_application_freezes_what_it_loaded():
    env = {
        "PATH": "/usr/bin:/bin",
        "DEBUG": "0",
        "SECRET_KEY": "wsgi-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DATABASE_URL": "sqlite:////tmp/nightstorm-wsgi-probe.sqlite3",
        "REDIS_URL": "",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    frozen, tracked = map(int, out.stdout.split())
    # Django, DRF and the apps are tens of thousands of objects; a full pass now walks only
    # what was made after the freeze.
    assert frozen > 30_000
    assert tracked < frozen // 10
