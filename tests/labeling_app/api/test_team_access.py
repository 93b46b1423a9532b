"""Team-only projects: the hand-out, the labeling API, the labeler's pages and project list honour the team."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.errors import ServiceError
from labeling_app.models import Annotation, Assignment, Project
from labeling_app.selectors.labeling import labeler_projects
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_set_team
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = pytest.mark.django_db


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_open_projects_stay_open_to_every_labeler(demo_project, labeler):
    assert not demo_project.team_only
    assert task_assign_next(project=demo_project, labeler=labeler) is not None
    assert demo_project in labeler_projects(labeler)


def test_next_task_never_hands_out_a_team_projects_task_to_an_outsider(demo_project, labeler, labeler2):
    project_set_team(project=demo_project, team_only=True, members=[labeler])
    outsider = api_for(labeler2)
    r = outsider.post(reverse("api:label-next", args=[demo_project.pk]))
    assert r.status_code == 404
    # The hand-out function answers the same: to an outsider the project does not exist.
    with pytest.raises(Project.DoesNotExist):
        task_assign_next(project=demo_project, labeler=labeler2)
    assert not Assignment.objects.filter(labeler=labeler2).exists()
    assert not Annotation.objects.filter(labeler=labeler2).exists()
    # The member gets every task, one after another, and the outsider still none.
    member = api_for(labeler)
    seen = set()
    for _ in range(3):
        body = member.post(reverse("api:label-next", args=[demo_project.pk])).json()
        task_id = body["task_id"]
        seen.add(task_id)
        ann = Annotation.objects.get(task_id=task_id, labeler=labeler)
        assert (
            member.post(
                reverse("api:label-submit", args=[task_id]),
                {"ratings": valid_ratings(ann.task, labeler)},
                format="json",
            ).status_code
            == 200
        )
    assert len(seen) == 3
    assert outsider.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 404
    # The project list of the labeler pages leaves it out; the page's "start" button answers 404 too.
    assert demo_project not in labeler_projects(labeler2) and demo_project in labeler_projects(labeler)
    page = Client()
    page.force_login(labeler2)
    assert demo_project.name not in page.get(reverse("labeler:home")).content.decode()
    assert page.post(reverse("labeler:next", args=[demo_project.pk])).status_code == 404


def test_a_labeler_taken_off_the_team_gets_404_on_their_open_task_and_keeps_their_labels(
    demo_project, labeler, labeler2
):
    api = api_for(labeler2)
    done = api.post(reverse("api:label-next", args=[demo_project.pk])).json()["task_id"]
    ann = Annotation.objects.get(task_id=done, labeler=labeler2)
    assert (
        api.post(
            reverse("api:label-submit", args=[done]), {"ratings": valid_ratings(ann.task, labeler2)}, format="json"
        ).status_code
        == 200
    )
    open_task = api.post(reverse("api:label-next", args=[demo_project.pk])).json()["task_id"]
    annotation_id = Annotation.objects.get(task_id=done, labeler=labeler2).pk

    assert Assignment.objects.filter(labeler=labeler2, task_id=open_task).exists()
    project_set_team(project=demo_project, team_only=True, members=[labeler])
    # Their lease ended with it (it no longer takes one of the task's labels from the team); their draft stays.
    assert not Assignment.objects.filter(labeler=labeler2).exists()
    assert Annotation.objects.get(labeler=labeler2, task_id=open_task).status == "draft"
    for name in ("api:label-task", "api:label-draft"):
        assert api.get(reverse(name, args=[open_task])).status_code == 404, name
    for name in ("api:label-submit", "api:label-skip", "api:label-renew"):
        assert api.post(reverse(name, args=[open_task]), {}, format="json").status_code == 404, name
    assert api.get(reverse("api:label-annotation", args=[annotation_id])).status_code == 404
    page = Client()
    page.force_login(labeler2)
    assert page.get(reverse("labeler:task", args=[open_task])).status_code == 404
    assert Annotation.objects.filter(labeler=labeler2, status="submitted").count() == 1  # their label stays

    # Put back on the team: their draft is theirs to see again, and the queue hands them work.
    project_set_team(project=demo_project, team_only=True, members=[labeler, labeler2])
    assert api.get(reverse("api:label-task", args=[open_task])).status_code == 200
    assert api.post(reverse("api:label-next", args=[demo_project.pk])).json()["task_id"] is not None
    # Opened to all: the team is kept for the next restriction, and everyone may label.
    project_set_team(project=demo_project, team_only=False, members=[labeler])
    outsider = make_user("lab3", "labeler")
    assert task_assign_next(project=demo_project, labeler=outsider) is not None
    assert list(demo_project.team.values_list("username", flat=True)) == ["lab1"]


def test_team_members_must_be_active_labelers(demo_project, labeler, researcher):
    with pytest.raises(ServiceError, match="Only active labelers.*res1"):
        project_set_team(project=demo_project, team_only=True, members=[labeler, researcher])
    with pytest.raises(ServiceError, match="at least one labeler"):
        project_set_team(project=demo_project, team_only=True, members=[])
    demo_project.refresh_from_db()
    assert not demo_project.team_only and not demo_project.team.exists()


def test_researcher_sets_the_team_on_the_project_page(demo_project, labeler, labeler2, researcher):
    page = Client()
    page.force_login(researcher)
    r = page.post(
        reverse("researcher:project_team", args=[demo_project.pk]), {"access": "team", "members": [labeler.pk]}
    )
    assert r.status_code == 302
    demo_project.refresh_from_db()
    assert demo_project.team_only and list(demo_project.team.all()) == [labeler]
    detail = page.get(reverse("researcher:project_detail", args=[demo_project.pk]), follow=True).content.decode()
    assert "team only: lab1" in detail
    bad = page.post(
        reverse("researcher:project_team", args=[demo_project.pk]), {"access": "team", "members": ["x"]}, follow=True
    )
    assert "Team not changed" in bad.content.decode()
    assert list(demo_project.team.all()) == [labeler]
