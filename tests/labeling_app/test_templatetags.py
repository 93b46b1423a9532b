"""The shared template helpers: the numbers filters both apps use, and the one polling pattern on every live page."""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from labeling_app.models import ImportJob
from labeling_app.templatetags.rlhf_format import num, percent
from rlhf_worker.models import TrainingJob


def test_percent_and_num():
    assert percent(0.726) == "72.6%" and percent(0.25, 0) == "25%" and percent(5 / 6) == "83.3%"
    assert percent(None) == "—" and percent("") == "—" and percent("0.5", 0) == "50%"
    assert num(7 / 9) == "0.778" and num(0.05671) == "0.0567" and num(1.2345) == "1.23" and num(0.68124, 4) == "0.6812"
    assert num(None) == "—" and num("n/a") == "n/a" and num(True) == "True"


def render(source: str, **context) -> str:
    return Template("{% load rlhf_poll %}" + source).render(Context(context))


def test_poll_tag_makes_an_element_replace_itself():
    html = render('<div id="x" {% poll url "#x" ms %}></div>', url="/a/?b=1&c=2", ms=1500)
    assert html == (
        '<div id="x" hx-get="/a/?b=1&amp;c=2" hx-select="#x" hx-target="this" hx-swap="outerHTML" '
        'hx-trigger="every 1500ms"></div>'
    )
    with pytest.raises(AssertionError, match="own id"):
        render('{% poll "/a/" "x" 100 %}')


@pytest.fixture
def rc(client, researcher):
    client.force_login(researcher)
    return client


def test_import_status_polls_while_the_import_runs(rc, demo_project):
    job = ImportJob.objects.create(project=demo_project, kind="prompts", file_path="/nonexistent.jsonl", total_lines=10)
    url = reverse("researcher:import_job", args=[demo_project.pk, job.pk])
    page = rc.get(url).content.decode()
    assert f'hx-get="{url}" hx-select="#import-status"' in page and 'hx-trigger="every 1000ms"' in page
    fragment = rc.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert (
        fragment.lstrip().startswith('<div id="import-status"') and "<html" not in fragment and "hx-trigger" in fragment
    )
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.SUCCEEDED, result={"lines": 10})
    fragment = rc.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="import-status"' in fragment and "hx-trigger" not in fragment and "hx-get" not in fragment


def test_jobs_list_and_workers_use_the_same_pattern(rc):
    job = TrainingJob.objects.create(kind="reward", status="running", progress=0.25, heartbeat_at=timezone.now())
    page = rc.get(reverse("jobs:list")).content.decode()
    assert 'id="job-table" hx-get="/jobs/" hx-select="#job-table"' in page and 'hx-trigger="every' in page
    assert "25%</progress> 25%" in page
    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded", progress=1.0)
    page = rc.get(reverse("jobs:list")).content.decode()
    assert 'id="job-table"' in page and "hx-trigger" not in page  # nothing runs: the table stops polling
    workers = rc.get(reverse("jobs:workers")).content.decode()
    assert 'id="workers-live" hx-get="/jobs/workers/" hx-select="#workers-live"' in workers
    assert 'hx-trigger="every 5000ms"' in workers
