"""The task browser page and its bulk archive / restore, through Django's test client."""

from __future__ import annotations

import re

import pytest

from labeling_app.models import RankingTask
from labeling_app.services.projects import project_create
from tests.labeling_app.researcher_fixtures import label
from tests.labeling_app.test_pages_at_scale import grow, queries

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(demo_project, labeler, labeler2):
    """demo_project (K=4, overlap 2, three tasks); the first has two labels that disagree."""
    first = demo_project.tasks.order_by("id").first()
    label(first, labeler, [1, 2, 3, 4])
    label(first, labeler2, [2, 1, 3, 4])
    return demo_project


def shown_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-task="(\d+)"', html)]


def test_the_page_lists_and_filters_tasks(client, researcher, project):
    client.force_login(researcher)
    url = f"/projects/{project.pk}/tasks/"
    ids = sorted(project.tasks.values_list("id", flat=True), reverse=True)
    html = client.get(url).content.decode()
    assert shown_ids(html) == ids
    assert "disagree" in html and f'href="/projects/{project.pk}/prompts/' in html  # rows link to their prompt
    assert shown_ids(client.get(url, {"agreement": "disagree"}).content.decode()) == [ids[-1]]
    assert shown_ids(client.get(url, {"labels": "0"}).content.decode()) == ids[:2]
    assert shown_ids(client.get(url, {"status": "archived"}).content.decode()) == []
    assert f'href="/projects/{project.pk}/tasks/"' in client.get(f"/projects/{project.pk}/").content.decode()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"labels_min": "3", "labels_max": "1"}, "must be at least the minimum (3)."),
        ({"date_from": "yesterday"}, "must be a day as YYYY-MM-DD"),
        ({"labels": "-1"}, "greater than or equal to 0"),
        ({"status": "lost"}, "Select a valid choice"),
    ],
)
def test_bad_filters_answer_400_saying_what_to_fix(client, researcher, project, params, message):
    client.force_login(researcher)
    response = client.get(f"/projects/{project.pk}/tasks/", params)
    assert response.status_code == 400 and message in response.content.decode()


def test_archive_and_restore_selected_keep_the_filters(client, researcher, project):
    client.force_login(researcher)
    first, second, third = project.tasks.order_by("id")
    response = client.post(
        f"/projects/{project.pk}/tasks/bulk/", {"action": "archive", "task": [first.pk, second.pk], "labels_max": "2"}
    )
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/tasks/?labels_max=2"
    assert set(RankingTask.objects.filter(archived_at__isnull=False).values_list("id", flat=True)) == {
        first.pk,
        second.pk,
    }
    page = client.get(response["Location"]).content.decode()
    assert "2 tasks archived." in page
    assert shown_ids(client.get(f"/projects/{project.pk}/tasks/", {"status": "archived"}).content.decode()) == [
        second.pk,
        first.pk,
    ]
    client.post(f"/projects/{project.pk}/tasks/bulk/", {"action": "restore", "task": [second.pk, third.pk]})
    assert list(RankingTask.objects.filter(archived_at__isnull=False).values_list("id", flat=True)) == [first.pk]


def test_bulk_refusals(client, researcher, project):
    client.force_login(researcher)
    url = f"/projects/{project.pk}/tasks/bulk/"
    page = client.post(url, {"action": "archive"}, follow=True).content.decode()
    assert "Tick the tasks to archive first" in page
    response = client.post(url, {"action": "archive", "task": ["x"]})
    assert response.status_code == 400 and "whole numbers" in response.content.decode()
    response = client.post(url, {"action": "delete"})
    assert response.status_code == 400 and "Unknown action 'delete'" in response.content.decode()
    response = client.post(url, {"action": "archive_all", "labels": "many"})
    assert response.status_code == 400
    assert not RankingTask.objects.filter(archived_at__isnull=False).exists()


def test_archive_all_matching_confirms_the_count_first(client, researcher, project):
    client.force_login(researcher)
    url = f"/projects/{project.pk}/tasks/bulk/"
    confirm = client.post(url, {"action": "archive_all", "labels": "0", "status": "open"})
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Archive 2 tasks?" in html
    assert "<li>Labels (exactly): 0</li>" in html and "<li>Status: open (no labels, not held)</li>" in html
    assert not RankingTask.objects.filter(archived_at__isnull=False).exists()  # nothing before the confirmation
    done = client.post(url, {"action": "archive_all", "labels": "0", "status": "open", "confirmed": "yes"}, follow=True)
    assert "2 tasks archived." in done.content.decode()
    assert RankingTask.objects.filter(archived_at__isnull=False, submitted_count=0).count() == 2
    client.post(url, {"action": "restore_all", "confirmed": "yes"})
    assert not RankingTask.objects.filter(archived_at__isnull=False).exists()


def test_the_page_costs_the_same_queries_as_tasks_grow(client, researcher, labeler):
    project = project_create(name="Grows", user=researcher, completions_per_task=2, overlap=2)
    grow(project, 3, labelers=[labeler])
    client.force_login(researcher)
    url = f"/projects/{project.pk}/tasks/?agreement=agree"
    small = queries(client, url)
    grow(project, 60, start=3, labelers=[labeler])
    assert queries(client, url) == small
    assert queries(client, f"/projects/{project.pk}/tasks/") == queries(
        client, f"/projects/{project.pk}/tasks/?labels_min=1"
    )
    html = client.get(f"/projects/{project.pk}/tasks/").content.decode()
    assert len(shown_ids(html)) == 50 and 'id="page-older"' in html and 'id="page-newer"' not in html
    older = re.search(r'href="\?after=(\d+)" id="page-older"', html).group(1)
    page2 = client.get(f"/projects/{project.pk}/tasks/?after={older}").content.decode()
    assert len(shown_ids(page2)) == 13 and 'id="page-newer"' in page2 and 'id="page-older"' not in page2
