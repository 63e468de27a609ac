"""Settings, read from the environment only (12-factor).

Defaults serve the embedded mode (`make run`: SQLite, no Redis); a real deployment sets
`DATABASE_URL`, `REDIS_URL`, `SECRET_KEY` and `DEBUG=0`. A malformed value fails at start with
`ImproperlyConfigured` naming the variable. Tuning knobs (`NIGHTSTORM_*`, `JACKPOT_*`,
`CONNECTIONS_*`) are listed in the README.
"""

import copy
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# A local `.env` (git-ignored) fills in what the environment leaves unset; `make run` writes
# one on its first start (a generated SECRET_KEY, DEBUG on) so every `manage.py` command works
# in the checkout afterwards. NIGHTSTORM_ENV_FILE names another file, or none when empty.
ENV_FILE = env.str("NIGHTSTORM_ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE)


def _int(name, default, minimum=0):
    try:
        value = env.int(name, default=default)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {env.str(name)!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (`make run` writes a local .env with one)"
        )
    SECRET_KEY = "django-insecure-dev-only-key-never-used-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "nightstorm.admin_apps.NightstormAdminConfig",  # django.contrib.admin, Nightstorm's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "pgtrigger",
    "axes",
    "django_prometheus",
    "nightstorm",
    "game",
    "jackpot",
    "connections",
]

MIDDLEWARE = [
    # Request metrics (django-prometheus) wrap everything, the 4xx/5xx of the others included.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "nightstorm.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "nightstorm.middleware.RejectNulBytesMiddleware",
    "nightstorm.middleware.ReplicaReadsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # after auth: it answers a locked-out admin login
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "nightstorm.urls"
WSGI_APPLICATION = "nightstorm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN so two
    # read-then-write transactions queue instead of failing with "database is locked" later.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db["TEST"] = {"NAME": env.str("SQLITE_TEST_NAME", default=str(BASE_DIR / "test.sqlite3"))}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections: opening one costs several milliseconds, more than a request.
    _db["CONN_MAX_AGE"] = _int("DB_CONN_MAX_AGE", 60)
    # A health check is one more round trip (SELECT 1) at the start of every request, the
    # largest single cost of a light API request in profiles. Without it, a connection the
    # database dropped (a restart) fails the one request that finds it, and Django discards
    # it at that request's end.
    _db["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
    # Server-side binding plus a prepare threshold lets psycopg prepare the hot statements
    # after a few runs, so PostgreSQL stops re-planning every conditional UPDATE. Behind a
    # transaction-mode pooler (PgBouncer) set DB_PREPARE_THRESHOLD=0 to never prepare.
    _prepare = _int("DB_PREPARE_THRESHOLD", 5)
    # Behind a transaction-mode pooler a named cursor cannot outlive its transaction.
    _db["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DB_DISABLE_SERVER_SIDE_CURSORS", default=False)
    _db["OPTIONS"] = {
        "server_side_binding": env.bool("DB_SERVER_SIDE_BINDING", default=True),
        "prepare_threshold": _prepare or None,
    }
    _pool_max = _int("DB_POOL_MAX_SIZE", 0)
    if _pool_max:
        # psycopg_pool through Django 5.1+; CONN_MAX_AGE must stay 0 with a pool.
        _db["CONN_MAX_AGE"] = 0
        _db["OPTIONS"]["pool"] = {
            "min_size": _int("DB_POOL_MIN_SIZE", 1),
            "max_size": _pool_max,
            "timeout": 10,
        }

# A PostgreSQL streaming replica for the plain reads of read-only requests (see
# nightstorm/routers.py); writes, transactions and a client's reads for
# NIGHTSTORM_READ_YOUR_WRITES_SECONDS after its own write stay on the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
NIGHTSTORM_READ_YOUR_WRITES_SECONDS = _int("NIGHTSTORM_READ_YOUR_WRITES_SECONDS", 5, minimum=1)
if DATABASE_REPLICA_URL:
    if _db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_REPLICA_URL needs a PostgreSQL DATABASE_URL")
    _replica = env.db_url("DATABASE_REPLICA_URL")
    if _replica["ENGINE"] != _db["ENGINE"]:
        raise ImproperlyConfigured("DATABASE_REPLICA_URL must be a postgres:// URL")
    for _option in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS", "DISABLE_SERVER_SIDE_CURSORS", "OPTIONS"):
        _replica[_option] = copy.deepcopy(_db[_option])
    # Tests read the database they write: the replica is the test database itself.
    _replica["TEST"] = {"MIRROR": "default"}
    DATABASES["replica"] = _replica
DATABASE_ROUTERS = ["nightstorm.routers.PrimaryReplicaRouter"]

# django-prometheus's wrappers of the same backends count queries, errors and their latency.
for _alias in DATABASES.values():
    _alias["ENGINE"] = _alias["ENGINE"].replace(
        "django.db.backends.", "django_prometheus.db.backends."
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# API bodies are small; refuse large ones before parsing them.
DATA_UPLOAD_MAX_MEMORY_SIZE = _int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1_048_576, minimum=1024)

# --- Cache, Redis and locks -----------------------------------------------------------------


def redis_cache(url: str, sentinels: list[str]) -> dict:
    """The django-redis cache on `url`; with `sentinels` ("host:port" each) `url` names the
    Sentinel service (`redis://<service>/<db>`) and the client follows its failovers.

    Only the primary's pool is used, reads included: the cache holds values the platform reads
    back as it wrote them (throttle counters, read-your-writes marks), which a lagging Redis
    replica could not promise."""
    options = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "SOCKET_CONNECT_TIMEOUT": 2,
        "SOCKET_TIMEOUT": 2,
    }
    location = url
    if sentinels:
        addresses = []
        for item in sentinels:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ImproperlyConfigured(f"REDIS_SENTINELS: {item!r} is not host:port")
            addresses.append((host, int(port)))
        options |= {
            "CLIENT_CLASS": "django_redis.client.SentinelClient",
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "SENTINELS": addresses,
            "SENTINEL_KWARGS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
        location = [url]  # a list: the primary only, no replica pool for reads
    return {
        # django-redis, counting gets, hits and misses (django-prometheus).
        "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
        "LOCATION": location,
        "KEY_PREFIX": "ns",
        "OPTIONS": options,
    }


REDIS_URL = env.str("REDIS_URL", default="")
REDIS_SENTINELS = env.list("REDIS_SENTINELS", default=[])
if REDIS_SENTINELS and not REDIS_URL:
    raise ImproperlyConfigured("REDIS_SENTINELS needs REDIS_URL=redis://<service name>/<db>")
if REDIS_URL:
    CACHES = {"default": redis_cache(REDIS_URL, REDIS_SENTINELS)}
else:
    CACHES = {"default": {"BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache"}}

# "redis" needs REDIS_URL; "database" works everywhere (lease rows in the default database).
NIGHTSTORM_LOCK_BACKEND = env.str(
    "NIGHTSTORM_LOCK_BACKEND", default="redis" if REDIS_URL else "database"
)
if NIGHTSTORM_LOCK_BACKEND not in ("redis", "database"):
    raise ImproperlyConfigured("NIGHTSTORM_LOCK_BACKEND must be 'redis' or 'database'")
if NIGHTSTORM_LOCK_BACKEND == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("NIGHTSTORM_LOCK_BACKEND=redis needs REDIS_URL")

# --- Concurrency toolkit --------------------------------------------------------------------

NIGHTSTORM_RETRY_BASE_DELAY_MS = _int("NIGHTSTORM_RETRY_BASE_DELAY_MS", 5)
NIGHTSTORM_RETRY_MAX_DELAY_MS = _int("NIGHTSTORM_RETRY_MAX_DELAY_MS", 500)
NIGHTSTORM_TRANSIENT_RETRY_ATTEMPTS = _int("NIGHTSTORM_TRANSIENT_RETRY_ATTEMPTS", 5, minimum=1)
NIGHTSTORM_LOCK_TIMEOUT_MS = _int("NIGHTSTORM_LOCK_TIMEOUT_MS", 3000, minimum=1)
NIGHTSTORM_OUTBOX_MAX_ATTEMPTS = _int("NIGHTSTORM_OUTBOX_MAX_ATTEMPTS", 6, minimum=1)
NIGHTSTORM_OUTBOX_BASE_DELAY_S = _int("NIGHTSTORM_OUTBOX_BASE_DELAY_S", 5)
NIGHTSTORM_IDEMPOTENCY_TTL_HOURS = _int("NIGHTSTORM_IDEMPOTENCY_TTL_HOURS", 48, minimum=1)
NIGHTSTORM_IDEMPOTENCY_CLAIM_SECONDS = _int("NIGHTSTORM_IDEMPOTENCY_CLAIM_SECONDS", 30, minimum=1)

# --- Game -----------------------------------------------------------------------------------

NIGHTSTORM_COMBAT_CAPACITY = _int("NIGHTSTORM_COMBAT_CAPACITY", 10, minimum=1)
NIGHTSTORM_COMBATS_PER_EVENT = _int("NIGHTSTORM_COMBATS_PER_EVENT", 3, minimum=1)
NIGHTSTORM_COMBAT_MAX_TURNS = _int("NIGHTSTORM_COMBAT_MAX_TURNS", 30, minimum=1)
NIGHTSTORM_COMBAT_PARALLELISM = _int("NIGHTSTORM_COMBAT_PARALLELISM", 4, minimum=1)
NIGHTSTORM_COMBAT_TICK_SECONDS = _int("NIGHTSTORM_COMBAT_TICK_SECONDS", 5, minimum=1)
# Combats advanced per transaction in a tick (each keeps its own row lock and turn guard; a
# failing batch is replayed one combat per transaction). 1 = one transaction per combat.
NIGHTSTORM_COMBAT_BATCH_SIZE = _int("NIGHTSTORM_COMBAT_BATCH_SIZE", 25, minimum=1)
NIGHTSTORM_INTERVAL_MINUTES = _int("NIGHTSTORM_INTERVAL_MINUTES", 60, minimum=1)
NIGHTSTORM_REGISTRATION_WINDOW_SECONDS = _int(
    "NIGHTSTORM_REGISTRATION_WINDOW_SECONDS", 300, minimum=1
)
NIGHTSTORM_SCHEDULE_GRACE_SECONDS = _int("NIGHTSTORM_SCHEDULE_GRACE_SECONDS", 180, minimum=1)

# --- Jackpot --------------------------------------------------------------------------------

JACKPOT_MAX_RETRY_ATTEMPTS = _int("JACKPOT_MAX_RETRY_ATTEMPTS", 10, minimum=1)
JACKPOT_RETRY_DELAY_MS = _int("JACKPOT_RETRY_DELAY_MS", 2)
JACKPOT_LOCK_TIMEOUT_MS = _int("JACKPOT_LOCK_TIMEOUT_MS", 2000, minimum=1)
JACKPOT_MAX_BET = _int("JACKPOT_MAX_BET", 1_000_000_000, minimum=1)
# Shared secret of game servers allowed to award wins (besides staff accounts).
JACKPOT_SERVICE_TOKEN = env.str("JACKPOT_SERVICE_TOKEN", default="")

# --- Connections ----------------------------------------------------------------------------

CONNECTIONS_SERVICE_TOKEN = env.str("CONNECTIONS_SERVICE_TOKEN", default="")
CONNECTIONS_IDLE_TIMEOUT_SECONDS = _int("CONNECTIONS_IDLE_TIMEOUT_SECONDS", 300, minimum=1)
CONNECTIONS_WRITE_QUEUE_SIZE = _int("CONNECTIONS_WRITE_QUEUE_SIZE", 10_000, minimum=1)
CONNECTIONS_MAX_LINE_BYTES = _int("CONNECTIONS_MAX_LINE_BYTES", 1024, minimum=16)
CONNECTIONS_MAX_CLIENTS = _int("CONNECTIONS_MAX_CLIENTS", 5000, minimum=1)
CONNECTIONS_MAX_METADATA_KEYS = _int("CONNECTIONS_MAX_METADATA_KEYS", 32, minimum=1)
CONNECTIONS_MAX_METADATA_VALUE_CHARS = _int("CONNECTIONS_MAX_METADATA_VALUE_CHARS", 1024, minimum=1)
# Failed gateway logins one address may make in the window, across connections and gateways.
CONNECTIONS_LOGIN_FAILURES_PER_ADDRESS = _int(
    "CONNECTIONS_LOGIN_FAILURES_PER_ADDRESS", 10, minimum=1
)
CONNECTIONS_LOGIN_WINDOW_SECONDS = _int("CONNECTIONS_LOGIN_WINDOW_SECONDS", 300, minimum=1)

# --- Operations -----------------------------------------------------------------------------

METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
HEALTH_REDIS_DEGRADED_MS = _int("HEALTH_REDIS_DEGRADED_MS", 100, minimum=1)
HEALTH_CLUSTER_STALE_SECONDS = _int("HEALTH_CLUSTER_STALE_SECONDS", 120, minimum=1)

# django-q2: the ORM broker keeps tasks and schedules in the default database. Delivery is at
# least once (an unacknowledged task comes back after `retry` seconds), so `timeout` stays below
# `retry` and every task tolerates running twice.
Q_CLUSTER = {
    "name": "nightstorm",
    "orm": "default",
    "workers": _int("Q_WORKERS", 2, minimum=1),
    "timeout": _int("Q_TIMEOUT", 50, minimum=1),
    "retry": _int("Q_RETRY", 60, minimum=2),
    "max_attempts": _int("Q_MAX_ATTEMPTS", 3, minimum=0),
    "catch_up": False,
    "save_limit": 500,
    "ack_failures": True,
    "poll": 0.5,
    "sync": env.bool("Q_SYNC", default=False),
    "label": "Tasks",
}
if Q_CLUSTER["timeout"] >= Q_CLUSTER["retry"]:
    raise ImproperlyConfigured("Q_TIMEOUT must be lower than Q_RETRY")

# --- API ------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "nightstorm.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["nightstorm.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "nightstorm.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "EXCEPTION_HANDLER": "nightstorm.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "nightstorm.api.schema.AutoSchema",
    # Every view is throttled: anonymous callers per address, accounts per user; the token
    # login ("auth") and registration add their own scopes. Service tokens are not throttled.
    "DEFAULT_THROTTLE_CLASSES": [
        "nightstorm.api.throttling.AnonRateThrottle",
        "nightstorm.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="120/min"),
        "user": env.str("THROTTLE_USER", default="1200/min"),
        "auth": env.str("THROTTLE_AUTH", default="30/min"),
        "register": env.str("THROTTLE_REGISTER", default="20/hour"),
    },
    "NUM_PROXIES": env.int("NUM_PROXIES", default=None),
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Nightstorm API",
    "DESCRIPTION": "Zones, players, combats, jackpots and connections.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # 3.1 (JSON Schema 2020-12) can state what 3.0 cannot, e.g. metadata's key pattern.
    "OAS_VERSION": "3.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Auth, i18n, static ---------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "nightstorm.admin_login.AdminLoginBackend",  # django-axes: admin login lockout
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ONLY_ADMIN_SITE = True
AXES_HANDLER = "nightstorm.admin_login.AdminLoginHandler"
AXES_FAILURE_LIMIT = _int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = _int("AXES_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
# The client's address: X-Forwarded-For only behind NUM_PROXIES trusted proxies (a client could
# otherwise pick a new address for every guess).
AXES_IPWARE_PROXY_COUNT = REST_FRAMEWORK["NUM_PROXIES"]
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if AXES_IPWARE_PROXY_COUNT else ["REMOTE_ADDR"]
)

PASSWORD_HASHERS = env.list(
    "PASSWORD_HASHERS",
    default=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ],
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed names (cache forever) need `collectstatic` first; off for DEBUG and tests.
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Source maps (the API docs' bundles ship 6 MB of them) are fetched only by a browser's
# developer tools: compressing them took most of `collectstatic`'s time.
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = (*Compressor.SKIP_COMPRESS_EXTENSIONS, "map")

# --- Security (safe by default when DEBUG is off) -------------------------------------------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# /health/ and /metrics are probed over plain HTTP from inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]

# --- Logs, metrics, traces (see docs/operations.md) ---------------------------------------


def _level(name, default):
    value = env.str(name, default=default).upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ImproperlyConfigured(f"{name} must be a log level (debug, info, ...), got {value!r}")
    return value


LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'plain', got {LOG_FORMAT!r}")
JACKPOT_ENABLE_METRICS = env.bool("JACKPOT_ENABLE_METRICS", default=True)
JACKPOT_HEALTH_WINDOW_MINUTES = _int("JACKPOT_HEALTH_WINDOW_MINUTES", 5, minimum=1)
JACKPOT_HEALTH_MIN_LOCK_SUCCESS_PERCENT = _int("JACKPOT_HEALTH_MIN_LOCK_SUCCESS_PERCENT", 95)
JACKPOT_HEALTH_MAX_CONFLICT_PERCENT = _int("JACKPOT_HEALTH_MAX_CONFLICT_PERCENT", 50)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "nightstorm.logs.ContextFilter"}},
    "formatters": {
        "plain": {"()": "nightstorm.logs.PlainFormatter"},
        "json": {"()": "nightstorm.logs.json_formatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": _level("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "jackpot": {"level": _level("JACKPOT_LOG_LEVEL", "INFO")},
        "nightstorm.audit": {"level": "INFO"},
        # django-axes announces itself at every start; its lockout warnings still show.
        "axes.apps": {"level": "WARNING"},
    },
}
