"""WSGI entry point: `gunicorn nightstorm.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nightstorm.settings")

application = get_wsgi_application()
