"""A staticfiles finder that serves plotly.min.js from the installed `plotly` wheel (nothing vendored)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_PREFIX = "vendor/plotly"
PLOTLY_FILE = "plotly.min.js"
PLOTLY_STATIC_PATH = f"{PLOTLY_PREFIX}/{PLOTLY_FILE}"  # use with {% static %}


def plotly_package_data() -> Path | None:
    """The folder of the installed plotly package that ships plotly.min.js (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "package_data"


class PlotlyFinder(BaseFinder):
    """Exposes exactly one file, `vendor/plotly/plotly.min.js`, to runserver, WhiteNoise and collectstatic."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.root = plotly_package_data()
        self.storage = FileSystemStorage(location=str(self.root or ""))
        self.storage.prefix = PLOTLY_PREFIX  # collectstatic copies into STATIC_ROOT/<prefix>/

    def _file(self) -> Path | None:
        if self.root is None:
            return None
        path = self.root / PLOTLY_FILE
        return path if path.is_file() else None

    def check(self, **kwargs):
        if self._file() is None:
            return [
                Error(
                    "plotly.min.js was not found in the installed plotly package",
                    hint="pip install -r requirements.txt (it pins plotly); the job charts need it.",
                    obj=self,
                    id="rlhf_worker.E001",
                )
            ]
        return []

    def find(self, path, find_all=False, **kwargs):
        find_all = find_all or kwargs.get("all", False)  # Django < 6 still passes `all=`
        found = self._file() if path == PLOTLY_STATIC_PATH else None
        if find_all:
            return [str(found)] if found else []
        return str(found) if found else None

    def list(self, ignore_patterns):
        if self._file() is not None:
            yield PLOTLY_FILE, self.storage
