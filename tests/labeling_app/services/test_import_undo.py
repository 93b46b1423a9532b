"""Undoing an import: exactly the rows it created go, reused and shared rows stay, human labels refuse it, a re-import works."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from django.db import connection, transaction

from config.errors import ServiceError
from labeling_app.models import Annotation, Completion, Demonstration, ImportJob, Prompt, RankingTask, Rating
from labeling_app.services.import_undo import import_job_undo
from labeling_app.services.imports import import_job_create
from labeling_app.services.projects import task_create
from tests.labeling_app.researcher_fixtures import label


@pytest.fixture(autouse=True)
def _import_dir(settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")


def upload(project, user, kind: str, rows: list[dict], name: str = "file.jsonl", source_name: str = "") -> ImportJob:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    job = import_job_create(
        project=project, kind=kind, upload=io.BytesIO(data), original_name=name, user=user, source_name=source_name
    )
    assert job.status == "succeeded", job.errors
    return job


def snapshot() -> dict[str, set[int]]:
    return {
        "prompts": set(Prompt.objects.values_list("pk", flat=True)),
        "completions": set(Completion.objects.values_list("pk", flat=True)),
        "tasks": set(RankingTask.objects.values_list("pk", flat=True)),
        "labels": set(Annotation.objects.values_list("pk", flat=True)),
        "demonstrations": set(Demonstration.objects.values_list("pk", flat=True)),
    }


def pairs(n: int, tag: str = "") -> list[dict]:
    return [{"prompt": f"Question {i}{tag}?", "completions": [f"yes {i}", f"no {i}"], "model": "m"} for i in range(n)]


def test_undo_deletes_exactly_what_the_import_created_and_keeps_the_job_as_history(k2, researcher, admin_user):
    Prompt.objects.create(project=k2, text="Question 0?")  # written by hand before: the import reuses it
    before = snapshot()
    job = upload(k2, researcher, "completions", pairs(3))
    assert job.result["prompts_created"] == 2 and job.result["prompts_existing"] == 1
    assert snapshot()["tasks"] - before["tasks"]

    job = import_job_undo(job=job, user=admin_user)

    assert snapshot() == before  # the hand-written prompt stays, everything the import made is gone
    assert job.status == "undone" and job.undone_by == admin_user and job.undone_at is not None
    assert job.undo_result["deleted"] == {
        "annotations": 0,
        "tasks": 3,
        "completions": 6,
        "demonstrations": 0,
        "prompts": 2,
    }
    assert job.result["tasks_created"] == 3  # what the import did is still on record
    with pytest.raises(ServiceError, match="already undone"):
        import_job_undo(job=job, user=admin_user)


def test_rows_an_import_only_reused_stay_and_rows_others_use_stay(k2, researcher):
    first = upload(k2, researcher, "completions", pairs(2), name="first.jsonl")
    # A second file repeats Question 0 (all reused) and brings Question 9: only Question 9's rows are its own.
    second = upload(k2, researcher, "completions", pairs(1) + [pairs(10)[9]], name="second.jsonl")
    assert (second.result["tasks_created"], second.result["tasks_existing"], second.result["completions_reused"]) == (
        1,
        1,
        2,
    )
    import_job_undo(job=second, user=researcher)
    assert set(Prompt.objects.values_list("text", flat=True)) == {"Question 0?", "Question 1?"}
    assert RankingTask.objects.count() == 2 and Completion.objects.count() == 4

    # Data made since on top of the first import's rows: a demonstration import under its prompt, a
    # hand-made task over one of its completions. Undo keeps those rows (and what they stand on).
    demo = upload(
        k2, researcher, "demonstrations", [{"prompt": "Question 1?", "completion": "Ideal."}], name="demo.jsonl"
    )
    q0 = Prompt.objects.get(text="Question 0?")
    own = Completion.objects.create(prompt=q0, text="by hand", source="imported")
    shared = Completion.objects.get(text="yes 0")
    hand_task = task_create(project=k2, prompt=q0, completions=[shared, own])
    job = import_job_undo(job=first, user=researcher)
    assert job.undo_result["deleted"] == {
        "annotations": 0,
        "tasks": 2,
        "completions": 3,
        "demonstrations": 0,
        "prompts": 0,
    }
    assert job.undo_result["kept"] == {
        "annotations": 0,
        "tasks": 0,
        "completions": 1,
        "demonstrations": 0,
        "prompts": 2,
    }
    assert set(Completion.objects.values_list("text", flat=True)) == {"yes 0", "by hand"}
    assert list(RankingTask.objects.values_list("pk", flat=True)) == [hand_task.pk]
    assert Demonstration.objects.get().prompt.text == "Question 1?"
    # The demonstration import only reused Question 1, so undoing it leaves the prompt.
    import_job_undo(job=demo, user=researcher)
    assert not Demonstration.objects.exists() and Prompt.objects.count() == 2


def test_human_labels_refuse_the_undo_and_say_how_many(k2, researcher, labeler, labeler2):
    job = upload(k2, researcher, "completions", pairs(3))
    tasks = list(RankingTask.objects.order_by("pk"))
    label(tasks[0], labeler, [1, 2])
    Annotation.objects.create(task=tasks[1], labeler=labeler2, status="draft", draft={"ranks": {}})
    before = snapshot()
    with pytest.raises(ServiceError) as refused:
        import_job_undo(job=job, user=researcher)
    assert "2 labels by labelers (drafts included)" in refused.value.message and refused.value.status == 409
    assert snapshot() == before
    job.refresh_from_db()
    assert job.status == "succeeded" and job.undone_at is None


def test_imported_labels_are_undone_and_a_reimport_brings_them_back(k2, researcher):
    rows = [{"prompt": f"P{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]
    first = upload(k2, researcher, "preferences", rows, source_name="hh-rlhf")
    assert Annotation.objects.count() == 4 and Rating.objects.count() == 8
    import_job_undo(job=first, user=researcher)
    assert snapshot() == {
        "prompts": set(),
        "completions": set(),
        "tasks": set(),
        "labels": set(),
        "demonstrations": set(),
    }
    assert not Rating.objects.exists()

    again = upload(k2, researcher, "preferences", rows, source_name="hh-rlhf")
    assert (again.result["annotations_created"], again.result["tasks_created"], again.result["prompts_created"]) == (
        4,
        4,
        4,
    )
    assert Annotation.objects.filter(import_job=again).count() == 4


def test_labels_from_another_source_keep_the_task_and_it_stays_closed(k2, researcher):
    rows = [{"prompt": "P", "chosen": "good", "rejected": "bad"}]
    first = upload(k2, researcher, "preferences", rows, source_name="source-a")
    second = upload(k2, researcher, "preferences", rows, source_name="source-b")
    task = RankingTask.objects.get()
    assert (task.overlap, task.submitted_count) == (2, 2)
    import_job_undo(job=second, user=researcher)
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count) == (1, 1)  # closed: never enters the labelers' queue
    # The other way round: the first import's task holds source-b's labels again after a re-import, so it stays.
    upload(k2, researcher, "preferences", rows, source_name="source-b")
    job = import_job_undo(job=first, user=researcher)
    assert job.undo_result["kept"]["tasks"] == 1 and job.undo_result["deleted"]["annotations"] == 1
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count) == (1, 1)
    assert list(Annotation.objects.values_list("import_source__name", flat=True)) == ["source-b"]


@pytest.mark.parametrize("status", ["failed", "lost", "importing"])
def test_only_a_succeeded_import_can_be_undone(k2, researcher, status):
    job = ImportJob.objects.create(project=k2, kind="prompts", status=status, original_name="x.jsonl")
    with pytest.raises(ServiceError, match="nothing to undo|still running"):
        import_job_undo(job=job, user=researcher)


def test_an_import_from_before_rows_were_recorded_cannot_be_undone(k2, researcher):
    job = upload(k2, researcher, "prompts", [{"prompt": "old"}])
    ImportJob.objects.filter(pk=job.pk).update(rows_recorded=False)  # as migration 0011 marks older jobs
    job.refresh_from_db()
    with pytest.raises(ServiceError, match="ran before imports recorded the rows"):
        import_job_undo(job=job, user=researcher)
    assert Prompt.objects.filter(text="old").exists()


@pytest.mark.django_db(transaction=True)
def test_a_label_saved_while_the_undo_runs_is_counted_not_lost(researcher, labeler, settings, tmp_path):
    """A labeler given the task while the undo starts: the undo waits for the task lock, then counts the label and refuses."""
    from labeling_app.services.leases import task_assign_next
    from labeling_app.services.projects import project_create

    project = project_create(name="Race", user=researcher, completions_per_task=2)
    job = upload(project, researcher, "completions", pairs(1))
    task = RankingTask.objects.get()
    holding, errors = threading.Event(), []

    def labeler_saves():
        try:
            with transaction.atomic():
                # The queue hands the task out: it locks the task row and writes the labeler's draft.
                assert task_assign_next(project=project, labeler=labeler).task.pk == task.pk
                holding.set()
                time.sleep(0.5)  # the undo starts meanwhile and must wait for this commit
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=labeler_saves)
    thread.start()
    assert holding.wait(5)
    with pytest.raises(ServiceError, match="1 label by labelers"):
        import_job_undo(job=job, user=researcher)
    thread.join()
    assert not errors
    assert RankingTask.objects.filter(pk=task.pk).exists() and Annotation.objects.filter(labeler=labeler).exists()
