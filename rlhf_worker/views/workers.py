"""Workers page: connected Celery workers, their queues, what each runs; recent lost jobs."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render
from django.utils import timezone

from labeling_app.roles import RESEARCHER, role_required
from rlhf_worker.selectors import jobs_lost, jobs_running, jobs_sweep_age, workers_overview


@role_required(RESEARCHER)
def worker_list(request):
    overview = workers_overview()
    connected = {w["name"].split("@", 1)[-1] for w in overview["workers"]} | {w["name"] for w in overview["workers"]}
    running = jobs_running()
    now = timezone.now()
    for job in running:
        job.heartbeat_age = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else None
        job.worker_connected = job.worker in connected
    lost = jobs_lost(limit=20)
    sweep_age = jobs_sweep_age()
    return render(
        request,
        "jobs/workers.html",
        {
            "overview": overview,
            "running": running,
            "lost": lost,
            "training_queue": settings.TRAINING_QUEUE,
            "sweep_every": settings.JOB_SWEEP_SECONDS,
            "sweep_age": sweep_age,
            # Three missed runs (and a minute's grace for a busy default worker) before the page raises it.
            "sweep_stale": sweep_age is None or sweep_age > 3 * settings.JOB_SWEEP_SECONDS + 60,
        },
    )
