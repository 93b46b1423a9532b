"""The database itself rejects rows that break the labeling invariants, also under concurrency."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from labeling_app.models import Annotation, CheckAnswer, Completion, ImportSource, Project, Rating, RankingTask
from tests.conftest import make_user


def first_task(project) -> RankingTask:
    return project.tasks.order_by("id").first()


def submitted(task, labeler) -> Annotation:
    return Annotation.objects.create(task=task, labeler=labeler, status="submitted", submitted_at=timezone.now())


@pytest.mark.parametrize("likert", [0, 8])
def test_likert_outside_1_to_7_is_rejected(demo_project, labeler, likert):
    task = first_task(demo_project)
    annotation = submitted(task, labeler)
    completion = task.completions.first()
    with pytest.raises(IntegrityError, match="rating_likert_1_to_7"):
        with transaction.atomic():
            Rating.objects.create(annotation=annotation, completion=completion, likert=likert, rank=1)


@pytest.mark.parametrize("likert", [1, 7])
def test_likert_ends_are_accepted(demo_project, labeler, likert):
    task = first_task(demo_project)
    annotation = submitted(task, labeler)
    rating = Rating.objects.create(annotation=annotation, completion=task.completions.first(), likert=likert, rank=1)
    assert Rating.objects.get(pk=rating.pk).likert == likert


def test_second_submitted_annotation_for_same_labeler_is_rejected(demo_project, labeler):
    task = first_task(demo_project)
    submitted(task, labeler)
    with pytest.raises(IntegrityError, match="annotation_one"):
        with transaction.atomic():
            submitted(task, labeler)
    assert task.annotations.count() == 1


def test_submitting_past_the_overlap_is_rejected(demo_project):
    task = first_task(demo_project)  # overlap 2
    a, b, c = (make_user(f"u{i}", "labeler") for i in range(3))
    submitted(task, a)
    submitted(task, b)
    with pytest.raises(IntegrityError, match="task_submitted_within_overlap"):
        with transaction.atomic():
            submitted(task, c)
    task.refresh_from_db()
    assert task.submitted_count == 2


def test_draft_to_submitted_counts_and_delete_uncounts(demo_project, labeler):
    task = first_task(demo_project)
    annotation = Annotation.objects.create(task=task, labeler=labeler)
    task.refresh_from_db()
    assert task.submitted_count == 0
    annotation.status, annotation.submitted_at = "submitted", timezone.now()
    annotation.save()
    task.refresh_from_db()
    assert task.submitted_count == 1
    annotation.delete()
    task.refresh_from_db()
    assert task.submitted_count == 0


def test_a_label_comes_from_a_person_or_an_import_source_not_both(demo_project, labeler):
    task = first_task(demo_project)
    source = ImportSource.objects.create(name="hh-rlhf")
    with pytest.raises(IntegrityError, match="annotation_labeler_xor_import_source"):
        with transaction.atomic():
            Annotation.objects.create(task=task, labeler=labeler, import_source=source)
    with pytest.raises(IntegrityError, match="annotation_labeler_xor_import_source"):
        with transaction.atomic():
            Annotation.objects.create(task=task)


def test_one_answer_per_check_and_k_between_2_and_9(demo_project, labeler):
    task = first_task(demo_project)
    rating = Rating.objects.create(
        annotation=submitted(task, labeler), completion=task.completions.first(), likert=4, rank=1
    )
    check = demo_project.checks.first()
    CheckAnswer.objects.create(rating=rating, check_question=check, value=True)
    with pytest.raises(IntegrityError, match="check_answer_one_per_check"):
        with transaction.atomic():
            CheckAnswer.objects.create(rating=rating, check_question=check, value=False)
    for k in (1, 10):
        with pytest.raises(IntegrityError, match="project_k_2_to_9"):
            with transaction.atomic():
                Project.objects.create(name=f"bad k {k}", completions_per_task=k)


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_never_exceed_the_overlap(researcher):
    """Twelve labelers submit on one task (overlap 3) at the same moment, each on its own connection."""
    from labeling_app.models import Prompt
    from labeling_app.services.projects import project_create, task_create

    project = project_create(name="race", user=researcher, completions_per_task=2, overlap=3)
    prompt = Prompt.objects.create(project=project, text="race?")
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in ("a", "b")],
    )
    labelers = [make_user(f"racer{i}", "labeler") for i in range(12)]
    barrier = threading.Barrier(len(labelers))
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit(user):
        try:
            barrier.wait()
            with transaction.atomic():
                submitted(task, user)
            result = "ok"
        except IntegrityError as exc:
            result = "rejected" if "task_submitted_within_overlap" in str(exc) else f"other: {exc}"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=submit, args=(u,)) for u in labelers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["rejected"] * 9
    task.refresh_from_db()
    assert task.submitted_count == 3
    assert Annotation.objects.filter(task=task, status="submitted").count() == 3
