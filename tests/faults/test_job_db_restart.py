"""A PostgreSQL restart while a real (tiny-model) reward job runs: the job reconnects and finishes, nothing doubled or lost.

The restart is what its clients see of one: every session of the test database is terminated (the message a
fast shutdown sends) and new connections are refused for a while (`ALLOW_CONNECTIONS false`), then allowed
again. Only the test database is touched, so other databases on the same server keep running.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection

from rlhf_worker.models import JobMetric, TrainingJob
from rlhf_worker.services.jobs import job_cancel, job_start
from tests.rlhf_worker.helpers import finished, wait_for
from tests.rlhf_worker.jobs.conftest import backbone_dir, labeled_project  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("stop_jobs_at_the_end"),
]


@contextmanager
def database_down():
    """Kill every session of the test database but this test's and refuse new ones until the block ends; yields
    how many died. (A database cannot refuse connections to itself from inside: the switch is thrown from the
    server's maintenance database.)"""
    params = connection.settings_dict
    name = params["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    with psycopg.connect(
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                [name, own_pid],
            ).fetchone()[0]
            yield killed
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def stop_jobs_at_the_end(admin_user):
    """Whatever a test asserted, no job it started keeps training into the next test."""
    yield
    for job in TrainingJob.objects.exclude(status__in=TrainingJob.FINISHED):
        job_cancel(job=job)
        wait_for(job, finished, timeout=60)


def reward_config(project, backbone, epochs):
    return {
        "project_ids": [project.pk],
        "backbone": backbone,
        "learning_rate": 1e-3,
        "epochs": epochs,
        "batch_size": 4,
        "max_length": 48,
        "eval_fraction": 0.25,
        "eval_every": 0,
        "save_every": 0,
        "device": "cpu",
    }


def test_a_short_restart_mid_job_loses_nothing_and_the_job_succeeds(
    labeled_project,
    backbone_dir,
    training_queue,  # noqa: F811
    admin_user,
    settings,
):
    settings.JOB_HEARTBEAT_SECONDS = 0.2
    settings.JOB_DB_RETRY_SECONDS = 30
    job = job_start(kind="reward", config=reward_config(labeled_project, backbone_dir, epochs=300), user=admin_user)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 2 or finished(j))
    assert job.status == "running", job.error
    with database_down() as killed:
        time.sleep(1.0)  # the job keeps training; its cancel checks, heartbeat and progress writes find no database
    assert killed >= 2, "the job's own connection and its heartbeat thread's were terminated"
    stepped_during_outage = job.step
    job = wait_for(job, finished, timeout=150)

    assert job.status == "succeeded", job.error
    assert job.step == job.total_steps > stepped_during_outage
    # every step's loss was written exactly once: none lost in the outage, none written twice by a retry
    steps = list(JobMetric.objects.filter(job=job, key="train/loss").order_by("step").values_list("step", flat=True))
    assert steps == list(range(1, job.total_steps + 1))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_an_outage_longer_than_the_bound_fails_the_job_with_a_clear_reason(
    labeled_project,
    backbone_dir,  # noqa: F811
    training_queue,
    admin_user,
    settings,
):
    settings.JOB_HEARTBEAT_SECONDS = 0.2
    settings.JOB_DB_RETRY_SECONDS = 1.0
    records = _Records()
    runner_log = logging.getLogger("rlhf_worker.jobs.runner")
    runner_log.addHandler(records)
    try:
        job = job_start(kind="reward", config=reward_config(labeled_project, backbone_dir, epochs=400), user=admin_user)
        job = wait_for(job, lambda j: j.status == "running" and j.step >= 2 or finished(j))
        assert job.status == "running", job.error
        with database_down():
            # Keep the database away until the runner has given up (longer than the 1 s bound), then let the
            # final "failed" write through.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(f"job {job.pk} failed" in m for m in records.messages):
                time.sleep(0.05)
        assert any(f"job {job.pk} failed" in m for m in records.messages), records.messages
        job = wait_for(job, finished, timeout=60)
    finally:
        runner_log.removeHandler(records)
    assert job.status == "failed"
    assert "the database was unreachable for" in job.error and "JOB_DB_RETRY_SECONDS=1" in job.error, job.error
    assert job.step < job.total_steps
