"""The static files storage for served deployments: content-hashed names, gzip and Brotli copies, ES module imports rewritten."""

from __future__ import annotations

import os
import tempfile

from django.contrib.staticfiles.storage import HashedFilesMixin
from whitenoise.compress import Compressor, brotli_installed
from whitenoise.storage import CompressedManifestStaticFilesStorage

# Our page scripts live under static/js/ (collected as js/...). label_task.js imports ./labeling/*.js by relative
# path: a browser resolves those against the importing file's hashed URL, so each import must name the hashed file.
APP_MODULES = "js/*.js"
_JS_MODULE_IMPORTS = HashedFilesMixin._js_module_import_aggregation_patterns[1]


class AtomicCompressor(Compressor):
    """WhiteNoise's compressor, writing each .gz / .br through a temporary file, so an interrupted collectstatic
    never leaves a truncated copy that StaticStorage would take as done."""

    def write_data(self, path, data, suffix, stat_result):
        filename = path + suffix
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(filename), prefix=".compressing-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.utime(tmp, (stat_result.st_atime, stat_result.st_mtime))
            os.chmod(tmp, 0o644)
            os.replace(tmp, filename)
        except BaseException:
            os.unlink(tmp)
            raise
        return filename


class StaticStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's compressed manifest storage, with two changes.

    ES modules: Django's switch for rewriting imports (`support_js_module_import_aggregation`) applies its patterns
    to every collected `.js` file. Third-party scripts are not ES modules, yet some match: django_htmx's
    `ext/hx-sse-2.js` has JSDoc types written `import("../htmx")` (a TypeScript declaration that is not shipped),
    on which collectstatic stops; and scanning the 4.8 MB plotly.min.js for imports is time spent for nothing. So
    the import patterns apply to APP_MODULES only: the scripts this project writes, any of which may be a module.

    Compression: only the hashed names get .gz / .br copies (pages link those through {% static %}; an unhashed
    name is still served, uncompressed), and a hashed name whose copy exists is skipped: its name is its content,
    so the copy is current. `make run` collects at every start and compresses only what changed.
    """

    patterns = (*HashedFilesMixin.patterns, (APP_MODULES, _JS_MODULE_IMPORTS))

    def create_compressor(self, **kwargs):
        return AtomicCompressor(**kwargs)

    def compress_files(self, paths):
        hashed = set(self.hashed_files.values())
        suffix = ".br" if brotli_installed else ".gz"
        todo = [path for path in paths if self.clean_name(path) in hashed and not self.exists(path + suffix)]
        yield from super().compress_files(todo)
