"""List pages cost what they show: their SQL query count stays the same as rows grow, long lists are paged,
and counts come from subqueries (no join of prompts with tasks). Timings live in benchmarks/pages_at_scale.py."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labeling_app.models import Completion, Demonstration, Project, Prompt
from labeling_app.selectors.projects import PROJECTS_PER_PAGE, PROMPTS_PER_PAGE, projects_with_counts
from labeling_app.services.projects import project_create, task_create
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label


def grow(project: Project, prompts: int, *, start: int = 0, labelers=()) -> None:
    """`prompts` more prompts, each with a demonstration, two completions and a task (labeled by `labelers`)."""
    for i in range(start, start + prompts):
        prompt = Prompt.objects.create(project=project, text=f"Prompt {project.pk}-{i}")
        Demonstration.objects.create(prompt=prompt, text="Ideal.")
        task = task_create(
            project=project,
            prompt=prompt,
            completions=[Completion.objects.create(prompt=prompt, text=f"c{j}", source="imported") for j in range(2)],
        )
        for n, person in enumerate(labelers):
            label(task, person, [1, 2] if (i + n) % 3 else [2, 1], [6, 2], {"toxic": [False, bool(n)]})


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.fixture
def admin_client_(client, db):
    user = make_user("boss", "admin")
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_project_list_counts_with_subqueries_and_pages(admin_client_, researcher):
    first = project_create(name="A first", user=researcher, completions_per_task=2, overlap=2)
    grow(first, 3)
    url = "/projects/"
    small = queries(admin_client_, url)
    Project.objects.bulk_create([Project(name=f"P{i:03d}") for i in range(PROJECTS_PER_PAGE + 5)])
    grow(first, 4, start=3)
    assert queries(admin_client_, url) == small
    page1 = admin_client_.get(url).content.decode()
    page2 = admin_client_.get(url + "?page=2").content.decode()
    assert "page 1 of 2" in page1 and "page 2 of 2" in page2
    assert page1.count("<tr><td><a href=") == PROJECTS_PER_PAGE and page2.count("<tr><td><a href=") == 6
    # the counts are right, and come from one subquery each rather than a join that multiplies rows
    counted = projects_with_counts().get(pk=first.pk)
    assert (counted.n_prompts, counted.n_tasks) == (7, 7)
    sql = str(projects_with_counts().query)
    assert "JOIN" not in sql.split("FROM")[-1] and "DISTINCT" not in sql


def test_prompt_list_queries_do_not_grow_and_pages(admin_client_, researcher):
    project = project_create(name="Prompts", user=researcher, completions_per_task=2, overlap=1)
    grow(project, 3)
    url = f"/projects/{project.pk}/prompts/"
    small = queries(admin_client_, url)
    grow(project, PROMPTS_PER_PAGE, start=3)
    assert queries(admin_client_, url) == small
    page = admin_client_.get(url + "?page=2").content.decode()
    assert (
        "page 2 of 2" in page and len(re.findall(r"<td>1</td><td>2</td><td>1</td>", page)) == 3
    )  # demos, completions, tasks


def test_quality_pages_queries_do_not_grow_with_labels(admin_client_, researcher):
    people = [make_user(f"lab{i}", "labeler") for i in range(3)]
    project = project_create(
        name="Quality size", user=researcher, completions_per_task=2, overlap=3, checks=[("toxic", "Toxic?")]
    )
    grow(project, 2, labelers=people[:2])
    urls = [
        f"/projects/{project.pk}/quality/",
        f"/projects/{project.pk}/quality/labelers/{people[0].pk}/",
        f"/projects/{project.pk}/",
    ]
    for url in urls:  # the first view of the quality page computes its snapshot; the next ones read it
        queries(admin_client_, url)
    small = [queries(admin_client_, url) for url in urls]
    grow(project, 10, start=2, labelers=people)
    assert [queries(admin_client_, url) for url in urls] == small


@pytest.mark.parametrize("model", ["annotation", "completion", "prompt", "rankingtask", "rating", "checkanswer"])
def test_django_admin_lists_queries_do_not_grow(admin_client_, researcher, model):
    people = [make_user(f"lab{i}", "labeler") for i in range(2)]
    project = project_create(
        name="Admin lists", user=researcher, completions_per_task=2, overlap=2, checks=[("toxic", "Toxic?")]
    )
    grow(project, 2, labelers=people)
    url = f"/django-admin/labeling_app/{model}/"
    small = queries(admin_client_, url)
    grow(project, 6, start=2, labelers=people)
    assert queries(admin_client_, url) == small


def test_labeler_home_queries_do_not_grow(client, researcher, labeler):
    project = project_create(name="Home", user=researcher, completions_per_task=2, overlap=1)
    grow(project, 2)
    client.force_login(labeler)
    small = queries(client, "/label/")
    for i in range(5):
        grow(project_create(name=f"Home {i}", user=researcher, completions_per_task=2, overlap=1), 2)
    assert queries(client, "/label/") == small


def test_django_admin_big_table_pages_with_the_planner_estimate(admin_client_, researcher, settings):
    """Past ADMIN_EXACT_COUNT_LIMIT rows, an unfiltered admin list counts nothing: the estimate stands in."""
    project = project_create(name="Estimated", user=researcher, completions_per_task=2, overlap=1)
    grow(project, 30)  # 60 completions
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_app_completion")
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'labeling_app_completion'::regclass")
        estimate = cursor.fetchone()[0]
    assert estimate > 0
    url = "/django-admin/labeling_app/completion/"

    settings.ADMIN_EXACT_COUNT_LIMIT = 10
    with CaptureQueriesContext(connection) as captured:
        page = admin_client_.get(url)
    assert page.status_code == 200
    assert not [q for q in captured if "COUNT(*)" in q["sql"].upper()]
    assert page.context["cl"].result_count == estimate

    # A filtered list, or a table under the limit, is counted exactly.
    filtered = admin_client_.get(url + "?source__exact=imported")
    assert filtered.context["cl"].result_count == Completion.objects.filter(source="imported").count() == 60
    settings.ADMIN_EXACT_COUNT_LIMIT = 10_000
    with CaptureQueriesContext(connection) as captured:
        exact = admin_client_.get(url)
    assert exact.context["cl"].result_count == 60
    assert [q for q in captured if "COUNT(*)" in q["sql"].upper()]
