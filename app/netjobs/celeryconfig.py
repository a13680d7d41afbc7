"""Celery's config module, imported lazily by Celery on first app.conf use."""

from __future__ import annotations

from netjobs.celery_settings import celery_settings
from netjobs.config import ConfigError, get_settings

try:
    _settings = get_settings()
except ConfigError as exc:
    # `celery -A netjobs.celery_app ...` with a broken env file: one line, no traceback.
    raise SystemExit(f"netjobs: configuration error: {exc}") from None

globals().update(celery_settings(_settings))
