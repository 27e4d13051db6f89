"""One settings module, read from the environment (12-factor).

Fail closed: the production posture (HTTPS-only cookies, HSTS, a real secret) is the
default. DJANGO_DEBUG=1 asks for the local dev posture; `make run` sets it.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from trading.config import BASE_DIR, VAR_DIR, ConfigError, ExchangeConfig, env_bool, env_int, env_list, env_secret, env_str

DEV_SECRET = "dev-only-insecure-secret-key-change-me-0123456789abcdefghij"
# `make run` writes a random secret here once (mode 0600), so every `manage.py` command
# beside it (check_history, create_api_token) starts without DJANGO_SECRET_KEY set.
LOCAL_SECRET_FILE = VAR_DIR / "secret_key"


def local_secret() -> str:
    try:
        return LOCAL_SECRET_FILE.read_text().strip()
    except OSError:
        return ""


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or local_secret() or (DEV_SECRET if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == DEV_SECRET or len(SECRET_KEY) < 50):
    raise ConfigError(
        "DJANGO_SECRET_KEY must be set to a real secret (50+ characters), or DJANGO_SECRET_KEY_PARAM to the SSM "
        "SecureString that holds it: DJANGO_DEBUG is off unless set to 1 (`make run` sets it for the local dev posture)"
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else "localhost")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", ",".join(
    f"http://{h}:{p}" for h in ("127.0.0.1", "localhost") for p in (os.environ.get("PORT", "8000"),)
)) if DEBUG else env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "https://localhost")

EXCHANGE = ExchangeConfig.from_env()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "template_partials",
    "channels",
    "ninja",  # /api/docs renders Swagger UI from ninja's own static files, not from a CDN
    "exchange_ui",
    "trading",
    "simfill",
    "reconcile_panel",
    "faults",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "exchange_ui.api_input.ApiInputMiddleware",  # /api/: no control characters in path or query
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exchange_ui.urls"
ASGI_APPLICATION = "exchange_ui.asgi.application"
WSGI_APPLICATION = "exchange_ui.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]


def database_from_url(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
        }
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parsed.path) or str(VAR_DIR / "db.sqlite3")}
    raise ConfigError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (postgres://, sqlite:///)")


_database_url = env_secret("DATABASE_URL")
DATABASES = {
    "default": database_from_url(_database_url)
    if _database_url
    else {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / "db.sqlite3"),
        # Background threads mirror the streams while pages read: wait, don't fail.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        # The tests' database is a file too: an in-memory one shares its cache between
        # threads, where a write locks a table outright ("database table is locked") and the
        # timeout above never applies.
        "TEST": {"NAME": str(VAR_DIR / "test-db.sqlite3")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if EXCHANGE.redis_url:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's pub/sub layer, decoding a group message once per process (exchange_ui/layers.py).
            "BACKEND": "exchange_ui.layers.SharedDecodeRedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": EXCHANGE.redis_url, "max_connections": 1000}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10000}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Static files are served by the app itself (daphne has no static handler): from the
# source folders directly, so nothing needs collecting before `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "werkzeug": {"level": "ERROR"},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}
