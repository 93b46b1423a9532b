"""The labeler's two calls per task through the API: their round trips, token authentication with the roles, and answers shaped as the schema says."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling_app.api.labeling import CheckOut, CompletionOut, NextTaskOutput, SubmitOutput
from labeling_app.models import Annotation
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings
from tests.labeling_app.services.test_labeling_round_trips import database_round_trips


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.django_db(transaction=True)
def test_next_and_submit_through_the_api_are_two_and_three_round_trips(
    demo_project, labeler, django_assert_num_queries
):
    """Next: the token with the user and roles, then the hand-out. Submit: the token, the task with the
    labeler's annotation, then the store. (A reused connection's health check adds one to each.)"""
    api = token_client(labeler)
    api.post(reverse("api:label-next", args=[demo_project.pk]))  # fills this process's checks cache
    Annotation.objects.filter(labeler=labeler).update(status="skipped")
    with django_assert_num_queries(2), database_round_trips() as nxt:
        body = api.post(reverse("api:label-next", args=[demo_project.pk])).json()
    ann = Annotation.objects.get(task_id=body["task_id"], labeler=labeler)
    ratings = valid_ratings(ann.task, labeler)
    with django_assert_num_queries(3), database_round_trips() as submit:
        r = api.post(reverse("api:label-submit", args=[body["task_id"]]), {"ratings": ratings}, format="json")
    assert r.status_code == 200 and r.json()["created"] is True and r.json()["today_count"] == 1
    assert (nxt.count, submit.count) == (2, 3)


def test_answers_have_exactly_the_fields_of_their_output_serializers(demo_project, labeler):
    api = token_client(labeler)
    nxt = api.post(reverse("api:label-next", args=[demo_project.pk])).json()
    assert set(nxt) == set(NextTaskOutput().fields)
    assert [set(c) for c in nxt["completions"]] == [set(CompletionOut().fields)] * 4
    assert [set(c) for c in nxt["checks"]] == [set(CheckOut().fields)] * demo_project.checks.count()
    ann = Annotation.objects.get(task_id=nxt["task_id"], labeler=labeler)
    body = api.post(
        reverse("api:label-submit", args=[nxt["task_id"]]), {"ratings": valid_ratings(ann.task, labeler)}, format="json"
    ).json()
    assert set(body) == set(SubmitOutput().fields)
    ann.refresh_from_db()
    as_drf_writes = serializers.DateTimeField().to_representation
    assert body["submitted_at"] == as_drf_writes(ann.submitted_at)
    assert nxt["completions"][0]["label"] == "Response A" and nxt["prompt_text"] == ann.task.prompt.text


def test_next_for_a_project_that_does_not_exist_answers_404(labeler):
    r = token_client(labeler).post(reverse("api:label-next", args=[987654]))
    assert r.status_code == 404


def test_a_bad_token_or_an_inactive_user_answers_401_and_roles_come_with_the_token(demo_project, labeler):
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 401
    researcher_only = token_client(make_user("res-token", "researcher"))
    assert researcher_only.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 403
    api = token_client(labeler)
    assert api.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 200
    labeler.is_active = False
    labeler.save()
    assert api.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 401
