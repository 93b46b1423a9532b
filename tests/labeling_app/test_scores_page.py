"""Reward scores and label summaries next to each completion on the researcher's prompt page (and the selector behind it)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling_app.models import Annotation, Completion, Prompt, Rating
from labeling_app.selectors.scores import task_completion_summaries
from labeling_app.services.projects import project_create, task_create
from rlhf_worker.models import CompletionScore, ModelVersion
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label

QUERY_BOUND = 10  # session, user, roles, project, prompt, completions, labels, scores, demonstrations, tasks


@pytest.fixture
def world(db, researcher, labeler, labeler2):
    """K=2, overlap 2: two submitted labels (and one draft that must not count); two reward versions scored one completion."""
    project = project_create(name="Scores", user=researcher, completions_per_task=2, overlap=2)
    prompt = Prompt.objects.create(project=project, text="Why is the sky blue?")
    good, bad = (
        Completion.objects.create(prompt=prompt, text=t, source=Completion.Source.IMPORTED)
        for t in ("Rayleigh scattering.", "Because it is.")
    )
    task = task_create(project=project, prompt=prompt, completions=[good, bad])
    label(task, labeler, ranks=[1, 2], likerts=[6, 3])
    label(task, labeler2, ranks=[1, 2], likerts=[5, 2])
    draft = Annotation.objects.create(task=task, labeler=make_user("lab3", "labeler"), status="draft")
    Rating.objects.create(annotation=draft, completion=good, rank=2, likert=1)

    now = timezone.now()
    old = ModelVersion.objects.create(kind="reward", name="rm-old", path="/x/old")
    new = ModelVersion.objects.create(kind="reward", name="rm-new", path="/x/new")
    ModelVersion.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=2))
    policy = ModelVersion.objects.create(kind="policy", name="a-policy", path="/x/p")
    for version, score in ((old, 0.125), (new, 1.5), (policy, 9.75)):
        CompletionScore.objects.create(completion=good, model_version=version, score=score, scored_at=now)
    return {"project": project, "prompt": prompt, "task": task, "good": good, "bad": bad, "old": old, "new": new}


def _url(w) -> str:
    return f"/projects/{w['project'].pk}/prompts/{w['prompt'].pk}/"


def _row(html: str, completion: Completion) -> str:
    match = re.search(rf'<tr id="completion-{completion.pk}">(.*?)(?=<tr id="completion-|</tbody>)', html, re.S)
    assert match, f"no row for completion {completion.pk}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1)))


def test_researcher_sees_labels_and_scores_next_to_each_completion(client, researcher, world):
    client.force_login(researcher)
    html = client.get(_url(world)).content.decode()

    good = _row(html, world["good"])
    assert "Mean rating 5.50" in good and "Mean rank 1.00" in good and "n 2" in good  # the draft's 1 / rank 2 left out
    new_at = good.index(f"Reward model #{world['new'].pk} (rm-new): 1.500")
    old_at = good.index(f"Reward model #{world['old'].pk} (rm-old): 0.125")
    assert new_at < old_at  # newest reward version first
    assert "a-policy" not in good and "9.750" not in good  # only reward models' scores
    assert "Not scored yet" not in good

    bad = _row(html, world["bad"])
    assert "Mean rating 2.50" in bad and "Mean rank 2.00" in bad and "n 2" in bad
    assert "Reward model" not in bad and "Not scored yet" in bad
    assert 'run a "Score completions" job from the' in html.replace("&quot;", '"') and 'href="/jobs/"' in html


def test_labeler_gets_403(client, labeler, world):
    client.force_login(labeler)
    response = client.get(_url(world))
    assert response.status_code == 403
    assert b"rm-new" not in response.content and b"Mean rating" not in response.content


def test_query_count_does_not_grow_with_completions(client, researcher, world, django_assert_max_num_queries):
    client.force_login(researcher)
    with django_assert_max_num_queries(QUERY_BOUND):
        assert client.get(_url(world)).status_code == 200
    now = timezone.now()
    submitted = list(world["task"].annotations.filter(status="submitted"))
    for i in range(8):  # more completions, each labeled and scored by both versions
        c = Completion.objects.create(prompt=world["prompt"], text=f"extra {i}", source=Completion.Source.IMPORTED)
        for annotation in submitted:
            Rating.objects.create(annotation=annotation, completion=c, rank=1, likert=4)
        for v in (world["old"], world["new"]):
            CompletionScore.objects.create(completion=c, model_version=v, score=i, scored_at=now)
    with django_assert_max_num_queries(QUERY_BOUND):
        html = client.get(_url(world)).content.decode()
    assert html.count("Reward model #") == 2 + 16


def test_task_summaries_for_a_projects_tasks(world, django_assert_num_queries):
    with django_assert_num_queries(2):
        summaries = task_completion_summaries(world["project"].tasks.all())
        good, bad = summaries[world["good"].pk], summaries[world["bad"].pk]
    assert (good.mean_likert, good.mean_rank, good.n_labels) == (5.5, 1.0, 2)
    assert [(s.version_id, s.score) for s in good.scores] == [(world["new"].pk, 1.5), (world["old"].pk, 0.125)]
    assert (bad.mean_likert, bad.mean_rank, bad.n_labels, bad.scores) == (2.5, 2.0, 2, [])
    empty = summaries[10**9]
    assert (empty.n_labels, empty.mean_likert, empty.scores) == (0, None, [])
