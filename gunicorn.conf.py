"""gunicorn reads this file from the folder it starts in (the project root under `make run`, /app in the image):
the app's log lines for gunicorn's own loggers, and request metrics summed over all worker processes."""

import os
import shutil
import tempfile
from pathlib import Path

# Request metrics (config/metrics.py) are counted in each worker process. In prometheus_client's multiprocess
# mode each worker writes them to files in this folder, and /metrics sums the files of all workers.
# prometheus_client picks the mode when it is first imported, in each worker after this file has run in the
# master, so the variable is set here, before anything else is imported. An operator may name the folder.
OWN_FOLDER_PREFIX = "rlhf-gunicorn-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=OWN_FOLDER_PREFIX)

from config.logs import log_settings, logging_config  # noqa: E402  (after the variable: see above)

logconfig_dict = logging_config(*log_settings())


def on_starting(server):
    """Counts left by an earlier gunicorn in a folder the operator named would be added to this one's."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if Path(folder).name.startswith(OWN_FOLDER_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
