"""Redis down: the quality page computes its figures per request (it cannot read or store its snapshot), and
"Refresh now" says why nothing was stored; the numbers stay right."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling_app.models import Annotation
from labeling_app.selectors.quality import quality_aggregates
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.quality_snapshot import quality_snapshot_for_page
from tests.labeling_app.labeling_helpers import valid_ratings
from tests.labeling_app.researcher_fixtures import label

pytestmark = pytest.mark.django_db


def test_redis_down_the_quality_page_computes_its_figures(
    private_redis, settings, demo_project, labeler, labeler2, researcher
):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url()}}
    t0, _, _ = demo_project.tasks.order_by("id")
    label(t0, labeler, [1, 2, 3, 4], [7, 5, 3, 1])
    label(t0, labeler2, [1, 3, 2, 4], [6, 4, 5, 1])
    client = Client()
    client.force_login(researcher)
    url = f"/projects/{demo_project.pk}/quality/"
    assert client.get(url).context["snapshot"].stored, "a snapshot stored while the cache is up"

    private_redis.stop()
    task = task_assign_next(project=demo_project, labeler=labeler).task
    annotation_submit(task=task, labeler=labeler, ratings=valid_ratings(task, labeler))
    assert Annotation.objects.filter(status="submitted").count() == 3
    snapshot = quality_snapshot_for_page(project=demo_project)
    assert not snapshot.stored and not snapshot.stale and snapshot.aggregates == quality_aggregates(demo_project)
    response = client.get(url)
    assert response.status_code == 200
    assert response.context["labelers"] == quality_aggregates(demo_project)["labelers"]
    assert [r["tasks"] for r in response.context["labelers"]] == [2, 1], "the label submitted while Redis was down"
    refreshed = client.post(f"/projects/{demo_project.pk}/quality/refresh/", follow=True)
    assert refreshed.status_code == 200 and "the cache is down" in refreshed.content.decode()
