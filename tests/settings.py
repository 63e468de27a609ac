"""The test suite's settings: the platform's, plus the test-only app the toolkit's tests use
(`tests.toolkit_app`), so `nightstorm/` is tested on rows of its own and not the game's.

Processes a test starts (gunicorn, the orchestrator, run_platform) keep `nightstorm.settings`.
"""

from nightstorm.settings import *  # noqa: F403
from nightstorm.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.toolkit_app"]
