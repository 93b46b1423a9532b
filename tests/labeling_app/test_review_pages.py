"""The review pages as served: the researcher's task page (every label, accept / reject), the labeler's "My labels"
(own labels only, the reviewer's note, revision), and the export page's count of rejected labels left out."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling_app.models import Annotation, ImportSource, Rating
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.review import annotation_review
from labeling_app.selectors.review import MY_LABELS_PER_PAGE
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = pytest.mark.django_db


def submit(project, user, *, comment="looks fine", likert_by_position=None) -> Annotation:
    task = task_assign_next(project=project, labeler=user).task
    annotation_submit(
        task=task,
        labeler=user,
        ratings=valid_ratings(task, user, likert_by_position=likert_by_position),
        comment=comment,
    )
    annotation = Annotation.objects.get(task=task, labeler=user)
    # 2 min 5 s of work, so the page has a time spent to show
    Annotation.objects.filter(pk=annotation.pk).update(started_at=annotation.submitted_at - timedelta(seconds=125))
    return Annotation.objects.get(pk=annotation.pk)


def imported_label(task) -> Annotation:
    source = ImportSource.objects.create(name="public-set")
    annotation = Annotation.objects.create(
        task=task, import_source=source, status="submitted", submitted_at=timezone.now()
    )
    for position, tc in enumerate(task.task_completions.order_by("position")):
        Rating.objects.create(annotation=annotation, completion_id=tc.completion_id, rank=position + 1)
    return annotation


def test_the_review_page_shows_every_label_with_what_it_says(client, demo_project, labeler, researcher):
    mine = submit(demo_project, labeler, comment="B rambles", likert_by_position=[7, 4, 4, 1])
    task = mine.task
    imported_label(task)
    client.force_login(researcher)
    response = client.get(f"/projects/{demo_project.pk}/tasks/{task.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    labels = response.context["labels"]
    assert [label.author for label in labels] == ["lab1", "import:public-set"]
    human = labels[0].current
    # In the labeler's shown order, lettered A.. as they saw them, each with its rating and rank.
    assert [c.completion_id for c in human.completions] == mine.shown_order
    assert [c.letter for c in human.completions] == ["A", "B", "C", "D"]
    assert [(c.likert, c.rank) for c in human.completions] == [(7, 1), (4, 2), (4, 2), (1, 3)]
    assert human.ranking == "A > B = C > D"
    assert human.seconds_spent == pytest.approx(125)
    # valid_ratings answers the checks yes, no, yes, …: "yes" to a problem check and "no" to "satisfies the constraints"
    # flag problems; the page marks those answers with the polarity the labeling page uses.
    assert any(c.problems for c in human.completions)
    for check in human.completions[0].checks:
        question = demo_project.checks.get(question=check.question)
        assert check.problem == (check.answer == question.problem_answer)
    assert "B rambles" in html and "2 min 5 s" in html and "A &gt; B = C &gt; D" in html
    assert "Pending review" in html and "import:public-set" in html
    assert labels[1].current.completions[0].letter == ""  # an imported label was never shown here


def test_reject_with_a_note_then_the_labeler_reads_it_and_revises(client, demo_project, labeler, researcher):
    mine = submit(demo_project, labeler)
    task = mine.task
    url = f"/projects/{demo_project.pk}/tasks/{task.pk}/labels/{mine.pk}/review/"
    client.force_login(researcher)
    refused = client.post(url, {"decision": "reject", "note": "", "seen_revision": "0"}, follow=True)
    assert "not reviewed" in refused.content.decode() and "Say in a note" in refused.content.decode()
    assert Annotation.objects.get(pk=mine.pk).review_state == "pending"
    done = client.post(
        url, {"decision": "reject", "note": "The ranking contradicts your ratings", "seen_revision": "0"}
    )
    assert done.status_code == 302 and done["Location"].endswith(f"#label-{mine.pk}")
    assert Annotation.objects.get(pk=mine.pk).review_state == "rejected"

    client.force_login(labeler)
    listing = client.get("/label/mine/").content.decode()
    assert "Rejected" in listing and "The ranking contradicts your ratings" in listing
    detail = client.get(f"/label/mine/{task.pk}/")
    assert detail.status_code == 200 and 'id="revise-link"' in detail.content.decode()
    page = client.get(f"/label/mine/{task.pk}/revise/")
    assert page.status_code == 200
    config = page.context["config"]
    assert config["mode"] == "revise" and config["urls"]["submit"] == f"/api/label/tasks/{task.pk}/revise/"
    assert {r["completion"]: r["rank"] for r in config["draft"]["ratings"]} == {
        r.completion_id: r.rank for r in Rating.objects.filter(annotation=mine)
    }
    assert "revise-banner" in page.content.decode() and "skip-open" not in page.content.decode()

    new = valid_ratings(task, labeler, likert_by_position=[1, 2, 3, 4])
    answer = client.post(
        f"/api/label/tasks/{task.pk}/revise/",
        data=json.dumps({"ratings": new, "comment": "fixed", "opened_at": config["openedAt"]}),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["review_state"] == "pending" and answer.json()["revision_count"] == 1

    client.force_login(researcher)
    review = client.get(f"/projects/{demo_project.pk}/tasks/{task.pk}/")
    label = review.context["labels"][0]
    assert label.current.comment == "fixed" and [v.number for v in label.earlier] == [1]
    assert (
        label.earlier[0].review_state == "rejected"
        and label.earlier[0].review_note == "The ranking contradicts your ratings"
    )
    assert "Earlier versions (1)" in review.content.decode()


def test_an_accepted_label_is_closed_and_the_api_says_why(client, demo_project, labeler, researcher):
    mine = submit(demo_project, labeler)
    annotation_review(annotation=mine, reviewer=researcher, decision="accept")
    client.force_login(labeler)
    detail = client.get(f"/label/mine/{mine.task_id}/").content.decode()
    assert "revise-closed" in detail and "revise-link" not in detail
    assert client.get(f"/label/mine/{mine.task_id}/revise/")["Location"] == f"/label/mine/{mine.task_id}/"
    answer = client.post(
        f"/api/label/tasks/{mine.task_id}/revise/",
        data=json.dumps({"ratings": valid_ratings(mine.task, labeler)}),
        content_type="application/json",
    )
    assert answer.status_code == 409 and "accepted" in answer.json()["detail"]
    api = client.get(f"/api/label/annotations/{mine.pk}/").json()
    assert api["review_state"] == "accepted" and api["revision_count"] == 0


def test_a_labeler_never_sees_another_labelers_label(client, demo_project, labeler, labeler2):
    shared = submit(demo_project, labeler2, comment="private words")
    mine = submit(demo_project, labeler, comment="my words")
    assert mine.task_id == shared.task_id  # overlap 2: both labeled the same task
    only_theirs = submit(demo_project, labeler2, comment="more private words")
    assert only_theirs.task_id != shared.task_id
    client.force_login(labeler)
    # The shared task shows lab1's own label only; a task lab1 never had answers 404, as do its revise page and call.
    own = client.get(f"/label/mine/{shared.task_id}/").content.decode()
    assert "my words" in own and "private words" not in own
    assert client.get(f"/label/mine/{only_theirs.task_id}/").status_code == 404
    assert client.get(f"/label/mine/{only_theirs.task_id}/revise/").status_code == 404
    answer = client.post(
        f"/api/label/tasks/{only_theirs.task_id}/revise/",
        data=json.dumps({"ratings": valid_ratings(only_theirs.task, labeler2)}),
        content_type="application/json",
    )
    assert answer.status_code == 404
    assert client.get(f"/api/label/annotations/{only_theirs.pk}/").status_code == 404
    listing = client.get("/label/mine/").content.decode()
    assert "private words" not in listing and f'id="my-label-{only_theirs.task_id}"' not in listing
    # The researcher's page of the task and its review form: 403 for a labeler.
    assert client.get(f"/projects/{demo_project.pk}/tasks/{shared.task_id}/").status_code == 403
    assert (
        client.post(
            f"/projects/{demo_project.pk}/tasks/{shared.task_id}/labels/{shared.pk}/review/", {"decision": "accept"}
        ).status_code
        == 403
    )
    assert Annotation.objects.get(pk=shared.pk).review_state == "pending"
    assert Annotation.objects.get(pk=only_theirs.pk).revision_count == 0


def test_my_labels_are_paged_newest_first(client, demo_project, labeler):
    base = timezone.now()
    for i in range(MY_LABELS_PER_PAGE + 2):
        task = demo_project.tasks.first()
        if i:  # more tasks than the fixture's three
            from labeling_app.services.projects import task_create

            prompt = task.prompt
            task = task_create(project=demo_project, prompt=prompt, completions=list(task.completions.all()))
        annotation = Annotation.objects.create(
            task=task, labeler=labeler, status="submitted", submitted_at=base - timedelta(minutes=i), shown_order=[]
        )
        assert annotation.pk
    client.force_login(labeler)
    first = client.get("/label/mine/")
    shown = [a.submitted_at for a in first.context["labels"]]
    assert len(shown) == MY_LABELS_PER_PAGE and shown == sorted(shown, reverse=True)
    assert len(client.get("/label/mine/?page=2").context["labels"]) == 2


def test_the_task_page_of_a_submitted_task_opens_the_label(client, demo_project, labeler):
    mine = submit(demo_project, labeler)
    client.force_login(labeler)
    response = client.get(f"/label/tasks/{mine.task_id}/")
    assert response.status_code == 302 and response["Location"] == f"/label/mine/{mine.task_id}/"


def test_a_task_of_another_project_is_not_found(client, demo_project, researcher):
    from labeling_app.services.projects import project_create

    other = project_create(name="Other", user=researcher)
    client.force_login(researcher)
    assert client.get(f"/projects/{other.pk}/tasks/{demo_project.tasks.first().pk}/").status_code == 404


def test_the_export_page_says_how_many_rejected_labels_are_left_out(
    client, demo_project, labeler, labeler2, researcher
):
    for user in (labeler, labeler2):
        rejected = submit(demo_project, user)
        annotation_review(annotation=rejected, reviewer=researcher, decision="reject", note="no")
    client.force_login(researcher)
    html = client.get(f"/projects/{demo_project.pk}/export/?format=grouped").content.decode()
    assert "2 rejected labels are left out" in html
    preview = client.get(f"/api/projects/{demo_project.pk}/export/preview/?format=grouped").json()
    assert preview["rejected_left_out"] == 2 and preview["count"] == 0
    assert (
        "rejected"
        not in client.get(f"/projects/{demo_project.pk}/export/?format=sft")
        .content.decode()
        .split('id="export-preview"')[1]
        .split("</div>")[0]
    )


def test_the_revision_page_asks_the_checks_as_they_are_now(client, demo_project, labeler):
    mine = submit(demo_project, labeler)
    dropped = demo_project.checks.get(key="toxic")
    dropped.active = False
    dropped.save()
    client.force_login(labeler)
    config = client.get(f"/label/mine/{mine.task_id}/revise/").context["config"]
    assert all("toxic" not in r["checks"] and r["checks"] for r in config["draft"]["ratings"])
    # What the page would send back as it opened is a valid revision.
    answer = client.post(
        f"/api/label/tasks/{mine.task_id}/revise/",
        data=json.dumps(
            {
                "ratings": [
                    {k: r[k] for k in ("completion", "likert", "rank", "checks")} for r in config["draft"]["ratings"]
                ],
                "comment": "same",
            }
        ),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
