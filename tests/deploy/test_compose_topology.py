"""docker-compose.yml run as processes (no Docker here): import through the web and a worker, train, export.

Each app service runs with the environment, command and healthcheck compose gives it and sees only what its
container would (tests/deploy/topology.py): its own folder for every path not on a volume (hidden from the
other services by a private mount namespace where the kernel allows one), the named volumes shared with the
services that mount them, a fresh PostgreSQL database and an unused Redis database number.
RLHF_COMPOSE_FILE=path runs the same scenario against another compose file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from tests.deploy import compose
from tests.deploy.topology import Browser, FormFields, Topology, free_port, wait_until

pytestmark = pytest.mark.slow

COMPOSE_FILE = Path(os.environ.get("RLHF_COMPOSE_FILE") or compose.COMPOSE_FILE)
WORKERS = ("worker", "training-worker")
# Small values for what .env may tune, so the run fits a loaded 2-core machine; the secrets are this run's.
VARIABLES = {
    "SECRET_KEY": secrets.token_urlsafe(40),
    "POSTGRES_PASSWORD": "unused-by-this-test",
    "IMPORT_ASYNC_LINES": "40",
    "WEB_CONCURRENCY": "1",
    "WORKER_CONCURRENCY": "1",
}


@pytest.fixture(scope="module")
def database_url():
    """A database of its own on this run's PostgreSQL server, dropped afterwards."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"rlhf_topology_{uuid.uuid4().hex[:10]}"
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield parts._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis_url():
    """An empty Redis database number nobody is connected to: compose's queue names ("default", "training")
    must not meet the queues of `make run` or of other test runs on the same server."""
    base = urlsplit(os.environ["REDIS_URL"])
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        count = int(client.config_get("databases")["databases"])
    except (redis.ResponseError, KeyError):
        count = 16
    busy = {int(c.get("db", 0)) for c in client.client_list()} | {int(base.path.strip("/") or 0)}
    free = [
        n
        for n in reversed(range(count))
        if n not in busy and redis.Redis.from_url(base._replace(path=f"/{n}").geturl()).dbsize() == 0
    ]
    if not free:
        pytest.fail("no empty Redis database number without clients for the compose topology")
    url = base._replace(path=f"/{free[0]}").geturl()
    yield url
    redis.Redis.from_url(url).flushdb()


def sql(database_url: str, query: str, *params):
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()


def preference_lines(count: int) -> list[dict]:
    """Pairwise labels a tiny reward model can learn: the chosen answer is the polite one."""
    return [
        {
            "prompt": f"Question number {i}: how do I fix bug {i}?",
            "chosen": f"Thank you for asking. Check the log of step {i}, then retry.",
            "rejected": f"No idea about {i}, figure it out yourself.",
        }
        for i in range(count)
    ]


def test_compose_services_import_train_and_export_sharing_only_what_compose_shares(tmp_path, database_url, redis_url):
    from rlhf_worker.training.reward_model import save_tiny_backbone

    topology = Topology(compose.load(VARIABLES, COMPOSE_FILE), tmp_path, database_url=database_url, redis_url=redis_url)
    services = topology.services
    assert "migrate" in services, "compose needs a one-shot `migrate` service that web and workers wait for"
    topology.ports["web"] = port = free_port()
    try:
        # docker compose up: migrate runs to the end first, then web and workers.
        migrated = topology.run("migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        # What the image build did (the Dockerfile's RUN ... collectstatic): static files in the web's /app/var.
        collected = topology.run("web", ["python", "manage.py", "collectstatic", "--no-input", "-v", "0"], timeout=600)
        assert collected.returncode == 0, collected.stdout + collected.stderr

        topology.start("web")
        wait_until(
            lambda: topology.healthcheck("web", timeout=20).returncode == 0,
            "web healthcheck",
            90,
            interval=1,
            details=topology.logs,
        )
        browser = Browser(port)
        # Pages link static files by hashed name, served from there compressed.
        stylesheet = re.search(
            r'href="(/static/css/app\.[0-9a-f]{12}\.css)"', browser.get("/accounts/login/")[1].decode()
        )
        assert stylesheet, "the login page links the hashed stylesheet"
        response, _ = browser.request("GET", stylesheet.group(1), headers={"Accept-Encoding": "br"})
        assert (response.status, response.headers["Content-Encoding"]) == (200, "br")
        response, body = browser.get("/readyz")
        assert response.status == 503, body
        waiting_for = json.loads(body)["checks"]["celery"]
        assert "'default'" in waiting_for and "'training'" in waiting_for  # no worker consumes them yet

        for name in WORKERS:
            topology.start(name)
        wait_until(
            lambda: browser.get("/readyz")[0].status == 200,
            "readyz with both workers up",
            120,
            interval=1,
            details=lambda: topology.logs() + "\n" + browser.get("/readyz")[1].decode(),
        )
        for name in WORKERS:
            checked = topology.healthcheck(name)
            assert checked.returncode == 0, f"{name} healthcheck: {checked.stdout} {checked.stderr}"
        # The scheduler (Celery beat) sends the job sweep to `worker`; its healthcheck sees the sweep has run.
        topology.start("scheduler")
        wait_until(
            lambda: topology.healthcheck("scheduler").returncode == 0,
            "the scheduler's healthcheck",
            90,
            interval=2,
            details=topology.logs,
        )

        # The first admin, the way README says: docker compose run --rm web python manage.py create_user ...
        password = secrets.token_urlsafe(16)
        created = topology.run(
            "web",
            ["python", "manage.py", "create_user", "--role", "admin", "--no-input", "ops"],
            extra_env={"RLHF_USER_PASSWORD": password},
        )
        assert created.returncode == 0, created.stdout + created.stderr
        browser.login("ops", password)

        response, body = browser.post(
            "/projects/new/",
            {"name": "Topology", "instructions": "", "completions_per_task": 2, "overlap": 1, "lease_minutes": 30},
        )
        assert response.status == 302, body.decode(errors="replace")[:2000]
        project_id = int(response.headers["Location"].strip("/").split("/")[1])

        # An upload longer than IMPORT_ASYNC_LINES: the web saves it, the default worker imports it.
        threshold = int(topology.environment("web").get("IMPORT_ASYNC_LINES", 2000))
        rows = preference_lines(threshold + 8)
        upload = "".join(json.dumps(row) + "\n" for row in rows).encode()
        response, body = browser.post(
            f"/projects/{project_id}/import/",
            {"kind": "preferences", "source_name": "topology"},
            files={"file": ("labels.jsonl", upload)},
        )
        assert response.status == 302, body.decode(errors="replace")[:2000]
        import_id = int(response.headers["Location"].strip("/").split("/")[-1])
        status, errors, file_path = wait_until(
            lambda: (
                (
                    row := sql(
                        database_url,
                        "SELECT status, errors, file_path FROM labeling_app_importjob WHERE id = %s",
                        import_id,
                    )
                )
                and row[0] in ("succeeded", "failed")
                and row
            ),
            "the import job",
            120,
            details=topology.logs,
        )
        assert topology.visible_to("worker", file_path), (
            f"the web saved the upload where the worker cannot read it: {file_path}"
        )
        assert status == "succeeded", f"import failed on the worker: {errors}"

        # A backbone put into the models volume (as an admin would copy one there), a tiny random one.
        model_store = Path(topology.environment("training-worker")["MODEL_STORE"])
        backbone = save_tiny_backbone(model_store / "backbones" / "tiny-bert", "bert", seed=0)
        response, body = browser.get("/jobs/start/reward/")
        assert response.status == 200, body.decode(errors="replace")[:2000]
        form = FormFields(body.decode()).submit(
            "learning_rate",
            project_ids=[project_id],
            backbone=backbone,
            epochs=1,
            batch_size=8,
            max_length=48,
            learning_rate=1e-3,
            eval_fraction=0.25,
            eval_every=0,
            save_every=0,
            device="cpu",
        )
        response, body = browser.post("/jobs/start/reward/", form)
        assert response.status == 302, body.decode(errors="replace")[:3000]
        job_id = int(response.headers["Location"].strip("/").split("/")[-1])
        status, error, version_path = wait_until(
            lambda: (
                (
                    row := sql(
                        database_url,
                        "SELECT j.status, j.error, v.path FROM rlhf_worker_trainingjob j "
                        "LEFT JOIN rlhf_worker_modelversion v ON v.training_job_id = j.id WHERE j.id = %s",
                        job_id,
                    )
                )
                and row[0] in ("succeeded", "failed", "cancelled", "lost")
                and row
            ),
            "the reward job",
            180,
            details=topology.logs,
        )
        assert status == "succeeded", error
        # The trained model lies in the volume every app container mounts as MODEL_STORE, not in the worker's own.
        web_model_store = Path(topology.environment("web")["MODEL_STORE"])
        assert (
            Path(version_path).is_relative_to(web_model_store) and (Path(version_path) / "model.safetensors").is_file()
        )

        response, body = browser.get(f"/projects/{project_id}/export/download/?format=pairwise")
        assert response.status == 200, body.decode(errors="replace")[:2000]
        exported = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        assert sorted((r["prompt"], r["chosen"], r["rejected"]) for r in exported) == sorted(
            (r["prompt"], r["chosen"], r["rejected"]) for r in rows
        )
        assert all(code is None for code in topology.alive().values()), topology.logs()
    finally:
        topology.stop()
