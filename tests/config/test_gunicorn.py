"""gunicorn.conf.py, under a real gunicorn with two workers: /metrics sums the request counts of both, and
gunicorn's own lines come out in the app's log format."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

from django.db import connection

from tests.config.test_metrics import samples, value
from tests.deploy.topology import free_port

BASE_DIR = Path(__file__).resolve().parents[2]
TOKEN = "gunicorn-test-token-0123456789abcdefghij"
REQUESTS = "django_http_requests_before_middlewares_total"


def get(port: int, path: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers), timeout=30
    ) as r:
        return r.read()


def test_metrics_add_up_over_worker_processes_and_gunicorn_logs_json(tmp_path, db):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "LOG_LEVEL")}
    # The test database, where the app's tables are (the server's own database may not be migrated).
    database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + connection.settings_dict["NAME"]).geturl()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        METRICS_TOKEN=TOKEN,
        LOG_FORMAT="json",
        TMPDIR=str(tmp_path),
        RLHF_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=database_url,
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        # Run from the project root, as `make run` and the image do: that is where gunicorn finds gunicorn.conf.py.
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--access-logfile",
                "-",
            ],
            env=env,
            cwd=BASE_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                get(port, "/healthz")
                break
            except (URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()[-3000:]
                time.sleep(0.3)
        folders = list(tmp_path.glob("rlhf-gunicorn-metrics-*"))
        assert len(folders) == 1, "gunicorn.conf.py makes a folder for prometheus_client's multiprocess files"

        # Until both workers have answered something (each writes its own counter file).
        sent = 1
        while len({p.name for p in folders[0].glob("counter_*.db")}) < 2:
            assert sent < 500, "one worker answered every request"
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: get(port, "/healthz"), range(8)))
            sent += 8

        scraped = samples(get(port, "/metrics", TOKEN))
        counted = value(scraped, REQUESTS)
        assert counted == sent + 1  # the scrape counts itself: every request of both workers is in the sum
        assert value(scraped, "rlhf_metrics_query_success", query="jobs") == 1
        again = value(samples(get(port, "/metrics", TOKEN)), REQUESTS)
        assert again == counted + 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert not folders[0].exists(), "gunicorn removes the folder it made when it stops"

    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, gunicorn's included, is a JSON record
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert len(access) == sent + 2 and all("GET /" in r["message"] for r in access)
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in records)
