"""Reading settings from the environment: URLs, booleans, numbers, rates, and the secret key (generated locally, checked in production)."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RLHF_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    return number


RATE_PERIODS = ("s", "sec", "m", "min", "h", "hour", "d", "day")


def env_rate(name: str, default: str | None) -> str | None:
    """A DRF throttle rate such as `600/min`; `off` (or `none`) means no limit, returned as None."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("off", "none"):
        return None
    count, _, period = value.partition("/")
    if not (count.isdigit() and period in RATE_PERIODS):
        raise ValueError(f"{name} must look like 600/min (periods: {', '.join(RATE_PERIODS)}) or be off, got {value!r}")
    return value


def env_header_pair(name: str) -> tuple[str, str] | None:
    """`HTTP_X_FORWARDED_PROTO,https` -> ("HTTP_X_FORWARDED_PROTO", "https"): a request header and the value that means TLS."""
    value = os.environ.get(name)
    if not value:
        return None
    header, _, expected = (part.strip() for part in value.partition(","))
    if not header.startswith("HTTP_") or not expected:
        raise ValueError(
            f"{name} must be HEADER,VALUE with the header as Django names it, "
            f"e.g. HTTP_X_FORWARDED_PROTO,https; got {value!r}"
        )
    return header, expected


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Django DATABASES entry from postgres://user:pass@host:port/name?host=/socket/dir."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ValueError(f"DATABASE_URL must start with postgres:// or postgresql://, got {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.pop("host", None) or (unquote(parts.hostname) if parts.hostname else "")
    name = unquote(parts.path.lstrip("/")) or "postgres"
    return {
        "ENGINE": "config.db_backend",
        "NAME": name,
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": query,
    }


GENERATE_SECRET_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(64))"'


def secret_key_weakness(value: str) -> str | None:
    """Why a key is too weak to sign production sessions (Django's security.W009 rule), or None."""
    from django.core.checks.security.base import (
        SECRET_KEY_INSECURE_PREFIX,
        SECRET_KEY_MIN_LENGTH,
        SECRET_KEY_MIN_UNIQUE_CHARACTERS,
    )

    if value.startswith(SECRET_KEY_INSECURE_PREFIX):
        return (
            f"it starts with {SECRET_KEY_INSECURE_PREFIX!r}, the prefix of the keys startproject writes for development"
        )
    if len(value) < SECRET_KEY_MIN_LENGTH:
        return f"it has {len(value)} characters, fewer than {SECRET_KEY_MIN_LENGTH}"
    if len(set(value)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        return f"it has {len(set(value))} different characters, fewer than {SECRET_KEY_MIN_UNIQUE_CHARACTERS}"
    return None


def secret_key(production: bool) -> str:
    """SECRET_KEY from the environment (in production it must be set and strong); locally one is generated once into var/."""
    value = os.environ.get("SECRET_KEY")
    if production:
        if not value:
            raise RuntimeError(
                f"SECRET_KEY must be set in the environment when RLHF_ENV=production; generate one with {GENERATE_SECRET_KEY}"
            )
        weakness = secret_key_weakness(value)
        if weakness:
            raise RuntimeError(
                f"SECRET_KEY is too weak for RLHF_ENV=production: {weakness}. "
                f"Generate a strong one with {GENERATE_SECRET_KEY}"
            )
        return value
    if value:
        return value
    path = VAR_DIR / "secret_key"
    if not path.exists():
        # Several processes (gunicorn's workers) may start at once: each writes its own temporary file and links
        # it into place; a link never replaces an existing file, so the first key stands and every process reads it.
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=VAR_DIR, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(50))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()
