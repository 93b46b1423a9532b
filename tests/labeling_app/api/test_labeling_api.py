"""The labeling API: token and session auth, own annotations only, errors per field, idempotent submit."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling_app.models import Annotation, Rating
from labeling_app.services.leases import task_assign_next
from tests.labeling_app.labeling_helpers import valid_ratings


@pytest.fixture
def api(labeler):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    return client


def next_task(client, project) -> dict:
    r = client.post(reverse("api:label-next", args=[project.pk]))
    assert r.status_code == 200, r.content
    return r.json()


def test_token_auth_next_detail_submit_and_next(api, demo_project, labeler):
    body = next_task(api, demo_project)
    task_id = body["task_id"]
    assert body["url"] == f"/label/tasks/{task_id}/" and body["lease_expires_at"]
    detail = api.get(reverse("api:label-task", args=[task_id])).json()
    ann = Annotation.objects.get(task_id=task_id, labeler=labeler)
    assert [c["id"] for c in detail["completions"]] == ann.shown_order
    assert [c["label"] for c in detail["completions"]] == ["Response A", "Response B", "Response C", "Response D"]
    assert len(detail["checks"]) == demo_project.checks.count()
    ratings = valid_ratings(ann.task, labeler)
    r = api.post(reverse("api:label-submit", args=[task_id]), {"ratings": ratings, "comment": "ok"}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["created"] is True and r.json()["today_count"] == 1
    # A retry (double click, timeout) answers the same annotation and writes nothing new.
    again = api.post(reverse("api:label-submit", args=[task_id]), {"ratings": ratings, "comment": "ok"}, format="json")
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["annotation_id"] == r.json()["annotation_id"]
    assert Rating.objects.filter(annotation__task_id=task_id).count() == 4
    assert next_task(api, demo_project)["task_id"] not in (None, task_id)


def test_submit_errors_are_per_field_and_the_draft_is_restored(api, demo_project, labeler):
    task_id = next_task(api, demo_project)["task_id"]
    ann = Annotation.objects.get(task_id=task_id, labeler=labeler)
    ratings = valid_ratings(ann.task, labeler)
    ratings[1]["likert"] = None
    r = api.post(
        reverse("api:label-submit", args=[task_id]), {"ratings": ratings, "comment": "draft me"}, format="json"
    )
    assert r.status_code == 400
    body = r.json()
    assert body["errors"] == {
        f"ratings.{ratings[1]['completion']}.likert": ["Rate Response B from 1 (terrible) to 7 (excellent)."]
    }
    assert body["detail"] == "Rate Response B from 1 (terrible) to 7 (excellent)."
    draft = api.get(reverse("api:label-draft", args=[task_id])).json()["draft"]
    assert draft["comment"] == "draft me" and len(draft["ratings"]) == 4


def test_draft_save_and_restore(api, demo_project):
    task_id = next_task(api, demo_project)["task_id"]
    url = reverse("api:label-draft", args=[task_id])
    assert api.put(url, {"draft": {"comment": "wip", "ui": {"savedAt": 1}}}, format="json").status_code == 200
    assert api.get(url).json()["draft"] == {"comment": "wip", "ui": {"savedAt": 1}}
    bad = api.put(url, {"draft": ["not", "an", "object"]}, format="json")
    assert bad.status_code == 400 and "JSON object" in bad.json()["errors"]["draft"][0]


def test_skip_needs_a_reason(api, demo_project, labeler):
    task_id = next_task(api, demo_project)["task_id"]
    r = api.post(reverse("api:label-skip", args=[task_id]), {"reason": ""}, format="json")
    assert r.status_code == 400 and "reason" in r.json()["errors"]
    r = api.post(reverse("api:label-skip", args=[task_id]), {"reason": "off topic"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "skipped"
    assert Annotation.objects.get(task_id=task_id, labeler=labeler).skip_reason == "off topic"


def test_other_labelers_tasks_and_annotations_answer_404(api, demo_project, labeler2):
    theirs = task_assign_next(project=demo_project, labeler=labeler2)
    their_ann = Annotation.objects.get(task=theirs.task, labeler=labeler2)
    for name in ("api:label-task", "api:label-draft"):
        assert api.get(reverse(name, args=[theirs.task_id])).status_code == 404
    for name in ("api:label-submit", "api:label-skip", "api:label-renew"):
        assert api.post(reverse(name, args=[theirs.task_id]), {}, format="json").status_code == 404
    assert api.put(reverse("api:label-draft", args=[theirs.task_id]), {"draft": {}}, format="json").status_code == 404
    assert api.get(reverse("api:label-annotation", args=[their_ann.pk])).status_code == 404
    assert Annotation.objects.get(pk=their_ann.pk).draft == {}


def test_own_annotation_is_visible_with_its_ratings(api, demo_project, labeler):
    task_id = next_task(api, demo_project)["task_id"]
    ann = Annotation.objects.get(task_id=task_id, labeler=labeler)
    api.post(reverse("api:label-submit", args=[task_id]), {"ratings": valid_ratings(ann.task, labeler)}, format="json")
    body = api.get(reverse("api:label-annotation", args=[ann.pk])).json()
    assert body["status"] == "submitted" and body["shown_order"] == ann.shown_order
    assert len(body["ratings"]) == 4 and all(len(r["checks"]) == demo_project.checks.count() for r in body["ratings"])


def test_session_auth_needs_csrf_and_anonymous_gets_401(demo_project, labeler):
    anon = APIClient()
    assert anon.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 401
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(labeler)
    assert session.post(reverse("api:label-next", args=[demo_project.pk])).status_code == 403  # no CSRF token
    session.get(reverse("labeler:home"))
    token = session.cookies["csrftoken"].value
    r = session.post(reverse("api:label-next", args=[demo_project.pk]), HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 200 and r.json()["task_id"]


def test_schema_lists_the_labeling_endpoints(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in (
        "/api/label/projects/{project_id}/next/",
        "/api/label/tasks/{task_id}/submit/",
        "/api/label/tasks/{task_id}/draft/",
        "/api/label/tasks/{task_id}/skip/",
    ):
        assert path in schema["paths"], path


def test_task_page_renders_instructions_safely(client, demo_project, labeler):
    demo_project.instructions = "**Be kind** <script>alert(1)</script> [x](javascript:alert(2))"
    demo_project.save()
    client.force_login(labeler)
    r = client.post(reverse("labeler:next", args=[demo_project.pk]))
    assert r.status_code == 302
    page = client.get(r["Location"]).content.decode()
    assert "<strong>Be kind</strong>" in page
    assert "<script>alert(1)" not in page and "javascript:alert" not in page
    ann = Annotation.objects.get(labeler=labeler)
    positions = [page.index(f'id="comp-{cid}"') for cid in ann.shown_order]
    assert positions == sorted(positions)  # shown in the recorded order


def test_a_malformed_submission_answers_detail_and_errors_by_field_path(api, demo_project):
    """Input the serializer refuses answers the documented ErrorOutput shape, like a service's refusal."""
    task_id = next_task(api, demo_project)["task_id"]
    url = reverse("api:label-submit", args=[task_id])
    missing = api.post(url, {"comment": "no ratings"}, format="json")
    assert missing.status_code == 400
    assert set(missing.json()) == {"detail", "errors"} and list(missing.json()["errors"]) == ["ratings"]
    assert missing.json()["detail"] == missing.json()["errors"]["ratings"][0]

    nested = api.post(
        url, {"ratings": [{"completion": 1, "likert": 3}, {"completion": "x", "likert": "high"}]}, format="json"
    )
    assert nested.status_code == 400
    errors = nested.json()["errors"]
    assert set(errors) == {"ratings.1.completion", "ratings.1.likert"}, errors
    assert "valid integer" in errors["ratings.1.likert"][0]
    assert nested.json()["detail"] == "2 things to fix before this can be saved."
    assert not Annotation.objects.filter(task_id=task_id, status="submitted").exists()
