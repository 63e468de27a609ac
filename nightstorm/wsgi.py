"""WSGI entry point: `gunicorn nightstorm.wsgi:application`."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nightstorm.settings")

application = get_wsgi_application()

# What is loaded by now (modules, models, settings, the apps: about 110,000 objects) lives as
# long as the worker. Frozen, it is left out of the collector's full passes, which otherwise
# walk all of it with every thread of the worker stopped: 50 to 80 ms every few thousand
# requests, a pause that lands on the requests in flight (docs/platform.md).
gc.freeze()
