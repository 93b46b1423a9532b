"""collectstatic with the served storage (config/static_storage.py): hashed names, .gz and .br copies, ES module
imports that name the hashed files, and WhiteNoise serving them compressed and cacheable for good."""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import RequestFactory

BASE_DIR = Path(__file__).resolve().parents[2]
PRODUCTION_STORAGE = "config.static_storage.StaticStorage"
# Left out to keep this test quick (compressing is most of collectstatic's time): third-party bundles that hold no
# ES modules. django_htmx's extensions stay in: hx-sse-2.js looks like a module importer.
IGNORED = ["admin", "rest_framework", "drf_spectacular_sidecar", "htmx-*", "htmax-*", "*.min.js"]
# Without rlhf_worker's PlotlyFinder (plotly.min.js, 4.8 MB; the finder lists its one file whatever is ignored).
FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
]
IMPORT = re.compile(r"""^\s*import\s.*?\sfrom\s+["'](?P<url>\.{1,2}/[^"']+)["'];""", re.MULTILINE)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """STATIC_ROOT after collectstatic ran with the production storage."""
    from django.conf import settings
    from django.test import override_settings

    root = tmp_path_factory.mktemp("static_root")
    storages = {**settings.STORAGES, "staticfiles": {"BACKEND": PRODUCTION_STORAGE}}
    with override_settings(STATIC_ROOT=str(root), STORAGES=storages, STATICFILES_FINDERS=FINDERS):
        call_command("collectstatic", interactive=False, verbosity=0, ignore_patterns=IGNORED)
        yield root


def manifest(root: Path) -> dict[str, str]:
    return json.loads((root / "staticfiles.json").read_text())["paths"]


def test_the_production_settings_use_this_storage():
    from config.settings import STORAGES

    assert STORAGES["staticfiles"]["BACKEND"] == PRODUCTION_STORAGE


def test_every_file_gets_a_hashed_name_and_compressed_copies(collected):
    paths = manifest(collected)
    hashed = paths["js/label_task.js"]
    assert re.fullmatch(r"js/label_task\.[0-9a-f]{12}\.js", hashed)
    for name in ("js/label_task.js", "css/app.css", "django_htmx/ext/hx-sse-2.js"):
        assert (collected / paths[name]).is_file(), name
        assert (collected / (paths[name] + ".gz")).is_file(), name
        assert (collected / (paths[name] + ".br")).is_file(), name


def test_module_imports_name_the_hashed_files(collected):
    paths = manifest(collected)
    modules = [name for name in paths if name.startswith("js/") and name.endswith(".js")]
    assert "js/labeling/ranking.js" in modules
    entry = (collected / paths["js/label_task.js"]).read_text()
    imports = IMPORT.findall(entry)
    # every module the labeling page imports in its source is imported, hashed, from the served copy
    written = IMPORT.findall((BASE_DIR / "static" / "js" / "label_task.js").read_text())
    assert len(written) >= 8 and len(imports) == len(written), entry[:1200]
    assert all(re.fullmatch(r"\./labeling/\w+\.[0-9a-f]{12}\.js", name) for name in imports), imports
    for name in modules:
        source = (BASE_DIR / "static" / name).read_text()
        served = (collected / paths[name]).read_text()
        for original, rewritten in zip(IMPORT.findall(source), IMPORT.findall(served), strict=True):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), original))
            assert rewritten == posixpath.join(posixpath.dirname(original), posixpath.basename(paths[target])), name
            assert (collected / posixpath.dirname(name) / rewritten).resolve().is_file()


def test_third_party_scripts_are_left_as_they_are(collected):
    """hx-sse-2.js names a TypeScript declaration in a JSDoc comment, import("../htmx"): not a module import."""
    from django.contrib.staticfiles import finders

    original = Path(finders.find("django_htmx/ext/hx-sse-2.js")).read_text()
    served = (collected / manifest(collected)["django_htmx/ext/hx-sse-2.js"]).read_text()
    assert 'import("../htmx")' in served
    assert served == original


def test_a_second_collectstatic_compresses_nothing_again(collected):
    from django.conf import settings
    from django.test import override_settings

    compressed = collected / (manifest(collected)["js/label_task.js"] + ".br")
    before = compressed.stat().st_mtime_ns
    storages = {**settings.STORAGES, "staticfiles": {"BACKEND": PRODUCTION_STORAGE}}
    with override_settings(STATIC_ROOT=str(collected), STORAGES=storages, STATICFILES_FINDERS=FINDERS):
        call_command("collectstatic", interactive=False, verbosity=0, ignore_patterns=IGNORED)
    assert compressed.stat().st_mtime_ns == before
    assert not list(collected.rglob(".compressing-*")), "no temporary file is left behind"


def test_whitenoise_serves_the_hashed_module_compressed_and_cacheable_for_good(collected, settings):
    from whitenoise.middleware import WhiteNoiseMiddleware

    settings.STATIC_ROOT = str(collected)
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": PRODUCTION_STORAGE}}
    settings.WHITENOISE_USE_FINDERS = False  # production: STATIC_ROOT only
    middleware = WhiteNoiseMiddleware(get_response=lambda request: None)
    url = "/static/" + manifest(collected)["js/label_task.js"]
    response = middleware(RequestFactory().get(url, HTTP_ACCEPT_ENCODING="gzip, br"))
    assert response.status_code == 200
    assert response["Content-Encoding"] == "br"
    assert response["Content-Type"].startswith("text/javascript")
    assert "immutable" in response["Cache-Control"]
