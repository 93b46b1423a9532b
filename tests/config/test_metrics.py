"""/metrics: the app's numbers as PostgreSQL holds them, request metrics, and who may read them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_user

TOKEN = "metrics-token-for-tests-0123456789abcdef"


def samples(body: bytes) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value, from Prometheus's text format."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(scraped: dict, name: str, **labels) -> float:
    return scraped[(name, frozenset(labels.items()))]


def scrape(client) -> dict:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content)


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def submitted(task, *, labeler=None, import_source=None):
    from labeling_app.models import Annotation

    return Annotation.objects.create(
        task=task,
        labeler=labeler,
        import_source=import_source,
        status=Annotation.Status.SUBMITTED,
        submitted_at=timezone.now(),
    )


def test_label_and_queue_metrics_count_what_postgresql_holds(client, demo_project, labeler, labeler2):
    from labeling_app.models import Annotation, ImportSource, Project

    first, second, third = demo_project.tasks.order_by("id")  # overlap 2 each
    submitted(first, labeler=labeler)
    submitted(first, labeler=labeler2)  # first task done
    submitted(second, labeler=labeler)
    submitted(third, import_source=ImportSource.objects.create(name="hh-rlhf"))
    Annotation.objects.create(task=third, labeler=labeler2, status=Annotation.Status.DRAFT)  # a draft is no label
    Project.objects.create(name="Empty project")

    scraped = scrape(client)

    project = demo_project.name
    assert value(scraped, "rlhf_labels_submitted_total", project=project, source="labeler") == 3
    assert value(scraped, "rlhf_labels_submitted_total", project=project, source="import") == 1
    assert value(scraped, "rlhf_tasks_open", project=project) == 2
    assert value(scraped, "rlhf_labels_wanted", project=project) == 2
    assert value(scraped, "rlhf_tasks_open", project="Empty project") == 0
    assert value(scraped, "rlhf_labels_submitted_total", project="Empty project", source="labeler") == 0
    for query in ("tasks", "labels", "jobs"):
        assert value(scraped, "rlhf_metrics_query_success", query=query) == 1


def test_job_states_and_durations_come_from_the_job_rows(client, db):
    from rlhf_worker.models import TrainingJob

    now = timezone.now()

    def job(kind, status, seconds=None):
        started = now - timedelta(seconds=seconds) if seconds is not None else None
        finished = now if seconds is not None else None
        TrainingJob.objects.create(kind=kind, status=status, started_at=started, finished_at=finished)

    job("reward", "succeeded", 45)
    job("reward", "succeeded", 2000)
    job("sft", "failed", 5)
    job("ppo", "running")
    job("generate", "queued")
    job("generate", "queued")
    job("score", "cancelled")  # cancelled before it started: counted, but it has no duration

    scraped = scrape(client)

    assert value(scraped, "rlhf_training_jobs", kind="reward", status="succeeded") == 2
    assert value(scraped, "rlhf_training_jobs", kind="generate", status="queued") == 2
    assert value(scraped, "rlhf_training_jobs", kind="ppo", status="running") == 1
    assert value(scraped, "rlhf_training_jobs", kind="score", status="cancelled") == 1
    hist = "rlhf_training_job_duration_seconds"
    reward = {"kind": "reward", "status": "succeeded"}
    assert value(scraped, f"{hist}_bucket", le="30.0", **reward) == 0
    assert value(scraped, f"{hist}_bucket", le="60.0", **reward) == 1
    assert value(scraped, f"{hist}_bucket", le="1800.0", **reward) == 1
    assert value(scraped, f"{hist}_bucket", le="3600.0", **reward) == 2
    assert value(scraped, f"{hist}_bucket", le="+Inf", **reward) == 2
    assert value(scraped, f"{hist}_count", **reward) == 2
    assert value(scraped, f"{hist}_sum", **reward) == pytest.approx(2045, abs=0.01)
    assert value(scraped, f"{hist}_bucket", le="10.0", kind="sft", status="failed") == 1
    assert (f"{hist}_count", frozenset({"kind": "ppo", "status": "running"}.items())) not in scraped
    assert (f"{hist}_count", frozenset({"kind": "score", "status": "cancelled"}.items())) not in scraped


def test_request_metrics_count_the_requests_served(client, db):
    client.get("/healthz")
    client.get("/healthz")
    before = scrape(client)
    client.get("/healthz")
    after = scrape(client)
    name = "django_http_requests_latency_seconds_by_view_method_count"
    assert value(after, name, view="healthz", method="GET") - value(before, name, view="healthz", method="GET") == 1


def test_who_may_read_the_metrics(db, settings):
    from django.contrib.auth.models import User
    from django.test import Client

    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert b"rlhf_" not in anonymous.content

    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 401

    admin, labeler, staff = Client(), Client(), Client()
    admin.force_login(make_user("metrics-admin", "admin"))
    labeler.force_login(make_user("metrics-labeler", "labeler"))
    staff.force_login(User.objects.create_user("metrics-staff", is_staff=True))
    assert admin.get("/metrics").status_code == 200
    assert staff.get("/metrics").status_code == 200
    assert labeler.get("/metrics").status_code == 403
    assert labeler.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 401

    settings.METRICS_TOKEN = ""  # no token configured: no bearer is accepted, not even an empty one
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 401


def test_a_blocked_query_is_reported_within_its_timeout(client, db):
    """A table locked by another session: the jobs query gives up after its statement timeout, the scrape still
    answers with the other metrics, and the connection's own timeout is as before."""
    from django.conf import settings

    from config.metrics import QUERY_TIMEOUT_MS
    from rlhf_worker.models import TrainingJob

    db_settings = settings.DATABASES["default"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        before = cursor.fetchone()[0]
    locker = psycopg.connect(
        host=db_settings["HOST"] or None,
        port=db_settings["PORT"] or None,
        user=db_settings["USER"],
        password=db_settings["PASSWORD"] or None,
        dbname=connection.settings_dict["NAME"],
        autocommit=False,
    )
    try:
        locker.execute(f'LOCK TABLE "{TrainingJob._meta.db_table}" IN ACCESS EXCLUSIVE MODE')
        scraped = scrape(client)
    finally:
        locker.rollback()
        locker.close()
    assert value(scraped, "rlhf_metrics_query_success", query="jobs") == 0
    assert value(scraped, "rlhf_metrics_query_seconds", query="jobs") == pytest.approx(QUERY_TIMEOUT_MS / 1000, abs=1.5)
    assert value(scraped, "rlhf_metrics_query_success", query="tasks") == 1
    assert not any(name == "rlhf_training_jobs" for name, _ in scraped)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == before


def test_a_short_metrics_token_stops_the_start(tmp_path):
    code = "import django; django.setup(); from django.conf import settings; print(len(settings.METRICS_TOKEN))"
    env = dict(os.environ, RLHF_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    ok = subprocess.run(
        [sys.executable, "-c", code], env={**env, "METRICS_TOKEN": TOKEN}, capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stdout.split()[-1] == str(len(TOKEN)), ok.stderr
    short = subprocess.run(
        [sys.executable, "-c", code], env={**env, "METRICS_TOKEN": "guessable"}, capture_output=True, text=True
    )
    assert short.returncode != 0 and "METRICS_TOKEN must be at least 32 characters" in short.stderr
