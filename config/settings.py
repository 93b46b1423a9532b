"""Django settings, all read from the environment (see README's configuration table)."""

from __future__ import annotations

import os
from datetime import timedelta

from whitenoise.compress import Compressor

from .env import (
    BASE_DIR,
    GENERATE_SECRET_KEY,
    VAR_DIR,
    database_from_url,
    env_bool,
    env_header_pair,
    env_int,
    env_list,
    env_rate,
    secret_key,
)
from .logs import log_settings, logging_config

PRODUCTION = os.environ.get("RLHF_ENV", "local") == "production"
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key(PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
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
    "django_htmx",
    "django_prometheus",
    "axes",
    "labeling_app",
    "rlhf_worker",
]

MIDDLEWARE = [
    # First and (but for axes) last: request counts and latencies for /metrics, every request included.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as axes asks: it turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "labeling_app.roles.roles_context",
                "rlhf_worker.context_processors.job_notices",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/rlhf")
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Short socket timeouts: an unreachable Redis costs a request at most a few seconds, and what uses the cache fails
# open (the API throttle lets requests through; see config/throttling.py).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Login lockout (django-axes): LOGIN_FAILURE_LIMIT failed logins for one username from one client address
# lock that pair for LOGIN_LOCKOUT_MINUTES. Keyed by the pair, so an attacker cannot lock everyone out from one
# address, nor other people behind the same address out of their own accounts. The axes backend runs first and
# refuses a locked pair before any password is checked, for every caller of authenticate(): the login page,
# the admin site, and any password-taking API authentication.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Attempts during a lockout do not extend it, so the retry time the page names holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A correct password clears that pair's earlier failures: occasional typos never add up to a lockout.
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "labeling_app.views.auth.login_locked_out"
# The client address as the API throttles see it (REMOTE_ADDR, or X-Forwarded-For behind NUM_PROXIES proxies).
AXES_CLIENT_IP_CALLABLE = "labeling_app.views.auth.client_address"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "landing"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Admin dashboard charts: plotly.min.js comes from the installed plotly wheel (rlhf_worker/staticfiles.py).
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "rlhf_worker.staticfiles.PlotlyFinder",
]
STATIC_ROOT = VAR_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = not PRODUCTION
# Content-hashed names (cached for a year by browsers), gzip and Brotli copies, ES module imports rewritten to the
# hashed names (config/static_storage.py). Needs `collectstatic`, which `make run` and the image build run; the
# test suite runs without it (config/settings_test.py).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "config.static_storage.StaticStorage"},
}
# Source maps are fetched only by a browser's developer tools: not worth compressing (swagger's and redoc's are MBs).
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = (*Compressor.SKIP_COMPRESS_EXTENSIONS, "map")

SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PRODUCTION
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# TLS in production: plain-HTTP requests are redirected to https, and HSTS tells browsers to use only https.
# Behind a proxy that terminates TLS, SECURE_PROXY_SSL_HEADER names the header it sets (only trust a header
# the proxy always overwrites), or every request looks like plain HTTP and the redirect never ends.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_PROXY_SSL_HEADER = env_header_pair("SECURE_PROXY_SSL_HEADER")
# Load balancers and compose probe the health endpoints over plain HTTP inside the network.
# So does Prometheus scrape /metrics (a token sent over plain HTTP has been sent before any redirect could help).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: unauthenticated API calls get 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Services raise config.errors.ServiceError; this answers it with its status and {"detail", "errors"}.
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # Counted in the Redis cache; past the rate the API answers 429 with Retry-After. The user rate is far
    # above what a person labeling (a draft save per change, a few calls per task) can reach.
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.UserThrottle", "config.throttling.AnonThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("API_THROTTLE_USER", "1200/min"),
        "anon": env_rate("API_THROTTLE_ANON", "60/min"),
    },
    # How many proxies put the client's address in X-Forwarded-For; 0 trusts only the connection's address.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF labeling platform API",
    "DESCRIPTION": "Labeling queue, drafts, submissions, projects and training jobs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: Redis is the broker; job state lives in TrainingJob rows, so results are ignored by default.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
# Training and generation go to this queue: "gpu" on deployments with GPU workers.
TRAINING_QUEUE = os.environ.get("TRAINING_QUEUE", "training")

MODEL_STORE = os.environ.get("MODEL_STORE", str(VAR_DIR / "models"))
# The policy a job uses when none is chosen or promoted (a folder or hub id); empty = SmolLM2 from its wheel.
DEFAULT_POLICY = os.environ.get("DEFAULT_POLICY", "")
# Uploads are saved here before they are imported; files longer than IMPORT_ASYNC_LINES import in a Celery job.
IMPORT_DIR = os.environ.get("IMPORT_DIR", str(VAR_DIR / "imports"))
IMPORT_ASYNC_LINES = int(os.environ.get("IMPORT_ASYNC_LINES", "2000"))
# Saved files of rejected (failed or lost) uploads are deleted after this many days; succeeded ones are kept.
IMPORT_RETENTION_DAYS = float(os.environ.get("IMPORT_RETENTION_DAYS", "30"))
# Output folders (checkpoints) of failed, cancelled and lost training jobs are deleted after this many days.
JOB_RETENTION_DAYS = float(os.environ.get("JOB_RETENTION_DAYS", "14"))
# The longest prompt, completion or demonstration text accepted (imports, forms), in characters.
MAX_TEXT_CHARS = int(os.environ.get("MAX_TEXT_CHARS", "100000"))
# A running job writes a heartbeat this often; a job silent for JOB_LOST_AFTER seconds is marked lost.
JOB_HEARTBEAT_SECONDS = float(os.environ.get("JOB_HEARTBEAT_SECONDS", "5"))
JOB_LOST_AFTER_SECONDS = float(os.environ.get("JOB_LOST_AFTER_SECONDS", "120"))
# A running job's heartbeat, progress, metric and cancel-check writes reconnect and retry this long when the
# database restarts or is unreachable; past it the job fails (see rlhf_worker/jobs/db_retry.py).
JOB_DB_RETRY_SECONDS = float(os.environ.get("JOB_DB_RETRY_SECONDS", "60"))
# How often the scheduler sweeps jobs (rlhf_worker.services.jobs.jobs_sweep), and how long a queued job waits
# before the sweep checks that the broker still holds its message.
JOB_SWEEP_SECONDS = float(os.environ.get("JOB_SWEEP_SECONDS", "5"))
JOB_REQUEUE_AFTER_SECONDS = float(os.environ.get("JOB_REQUEUE_AFTER_SECONDS", "30"))
# How many processes a reward, SFT or PPO job whose num_processes is 0 (automatic) trains in: 0 = one per GPU this
# worker sees (CUDA_VISIBLE_DEVICES limits them), 1 on a CPU-only worker. Several run under torchrun, one per GPU.
TRAINING_NUM_PROCESSES = int(os.environ.get("TRAINING_NUM_PROCESSES", "0"))
# After a cancel, the training processes of a multi-process job get this long to stop (and checkpoint) on their own
# before they are terminated.
TRAINING_STOP_GRACE_SECONDS = float(os.environ.get("TRAINING_STOP_GRACE_SECONDS", "120"))
# How often a job's page refreshes while the job runs.
JOB_POLL_SECONDS = float(os.environ.get("JOB_POLL_SECONDS", "2"))

# How often the scheduler checks the projects' autopilots (rlhf_worker.services.autopilot.autopilots_tick): starts
# the cycles that are due, and moves on a cycle whose job ended (the runner also does that at once).
AUTOPILOT_TICK_SECONDS = float(os.environ.get("AUTOPILOT_TICK_SECONDS", "30"))

# Periodic tasks: `celery -A config beat` (make run's "scheduler", compose's `scheduler`; run exactly one) sends
# each to the default queue. This is the one schedule: add an entry here. `expires`: a run not started within
# its interval is dropped, so runs do not pile up behind a busy worker.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "jobs-sweep": {
        "task": "rlhf_worker.jobs_sweep",
        "schedule": JOB_SWEEP_SECONDS,
        "options": {"expires": JOB_SWEEP_SECONDS},
    },
    "imports-mark-lost": {"task": "labeling_app.imports_mark_lost", "schedule": 30.0, "options": {"expires": 30.0}},
    "import-uploads-purge": {
        "task": "labeling_app.import_uploads_purge",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
    "autopilots-tick": {
        "task": "rlhf_worker.autopilots_tick",
        "schedule": AUTOPILOT_TICK_SECONDS,
        "options": {"expires": AUTOPILOT_TICK_SECONDS},
    },
    # Checkpoints of failed, cancelled and lost jobs older than JOB_RETENTION_DAYS.
    "job-outputs-purge": {"task": "rlhf_worker.purge_job_outputs", "schedule": 3600.0, "options": {"expires": 3600.0}},
}

# Django admin lists of tables with more rows than this (by PostgreSQL's estimate) page with that estimate
# instead of an exact count(*) of the whole table (labeling_app/admin_paging.py).
ADMIN_EXACT_COUNT_LIMIT = 100_000

# /metrics (config/metrics.py): Prometheus sends `Authorization: Bearer <METRICS_TOKEN>`; unset, only admins see it.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ValueError(f"METRICS_TOKEN must be at least 32 characters long; generate one with {GENERATE_SECRET_KEY}")

# Web (Django and gunicorn, see gunicorn.conf.py) and Celery workers (config/celery.py) log through this.
LOGGING = logging_config(*log_settings())
LOGGING_CONFIG = "config.logs.configure"
