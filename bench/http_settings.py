"""Settings of the HTTP benchmark's gunicorn: the production settings, with the benchmark's
URLconf (the API plus the two ceiling views). Used only by `bench/bench_http.py`."""

from nightstorm.settings import *  # noqa: F403

ROOT_URLCONF = "bench.http_urls"
