"""Settings for the test suite: config.settings, but static files keep their plain names, since tests do not run collectstatic."""

from .settings import *  # noqa: F403
from .settings import STORAGES

# The hashed-name storage looks every {% static %} up in the manifest collectstatic writes, and the suite renders
# pages without one. tests/config/test_static_storage.py runs collectstatic with the real storage instead.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
