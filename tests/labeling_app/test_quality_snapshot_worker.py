"""A stale quality snapshot is refreshed by a real Celery worker through the real broker: the page queues the
task, the worker recomputes the figures, the next view shows them."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from labeling_app.selectors.quality import quality_aggregates
from labeling_app.services.quality_snapshot import quality_snapshot_for_page
from tests.labeling_app.researcher_fixtures import label

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_worker_refreshes_a_stale_snapshot(celery_worker, demo_project, labeler, labeler2, researcher):
    t0, t1, _ = demo_project.tasks.order_by("id")
    label(t0, labeler, [1, 2, 3, 4], [7, 5, 3, 1])
    label(t0, labeler2, [1, 3, 2, 4], [6, 4, 5, 1])
    client = Client()
    client.force_login(researcher)
    url = f"/projects/{demo_project.pk}/quality/"
    assert client.get(url).context["agreement"]["ranking"]["comparable"] == 6

    label(t1, labeler, [1, 2, 3, 4], [7, 5, 3, 1])
    label(t1, labeler2, [1, 2, 3, 4], [6, 4, 3, 1])
    stale = client.get(url)
    assert stale.context["snapshot"].stale and "(2 new labels since; refreshing…)" in stale.content.decode()
    deadline = time.monotonic() + 60
    while quality_snapshot_for_page(project=demo_project).stale:
        assert time.monotonic() < deadline, "the worker did not refresh the snapshot within 60 s"
        time.sleep(0.2)
    fresh = client.get(url)
    assert not fresh.context["snapshot"].stale
    assert fresh.context["agreement"]["ranking"] == quality_aggregates(demo_project)["ranking"]
    assert fresh.context["agreement"]["ranking"]["comparable"] == 12
