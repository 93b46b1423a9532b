"""Migration 0007 (import identity) on data imported twice before it: keys are back-filled, every existing row is kept, a re-import then changes nothing."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from labeling_app.imports.identity import completion_key, label_key
from labeling_app.models import prompt_content_hash
from tests.labeling_app.researcher_fixtures import write_jsonl

BEFORE = [("labeling_app", "0006_check_polarity")]
AFTER = [("labeling_app", "0007_import_identity")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest():
    """Every app's last migration: later ones leave the import keys alone, and today's models read the tables."""
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _doubled_import(apps) -> dict:
    """What importing a completions, a preferences and a demonstrations file twice each left behind before keys existed."""
    Project, Prompt, Completion = (
        apps.get_model("labeling_app", "Project"),
        apps.get_model("labeling_app", "Prompt"),
        apps.get_model("labeling_app", "Completion"),
    )
    RankingTask, TaskCompletion = (
        apps.get_model("labeling_app", "RankingTask"),
        apps.get_model("labeling_app", "TaskCompletion"),
    )
    ImportSource, Annotation = (
        apps.get_model("labeling_app", "ImportSource"),
        apps.get_model("labeling_app", "Annotation"),
    )
    Rating, CheckAnswer = apps.get_model("labeling_app", "Rating"), apps.get_model("labeling_app", "CheckAnswer")
    CheckQuestion, Demonstration = (
        apps.get_model("labeling_app", "CheckQuestion"),
        apps.get_model("labeling_app", "Demonstration"),
    )
    project = Project.objects.create(name="Legacy", completions_per_task=2, overlap=1, lease_minutes=30)
    toxic = CheckQuestion.objects.create(project=project, key="toxic", question="Toxic?", position=0)
    prompt = Prompt.objects.create(project=project, text="Q", content_hash=prompt_content_hash("Q", None))
    source = ImportSource.objects.create(name="hh")
    now = timezone.now()
    made = {"queue_tasks": [], "label_tasks": [], "annotations": []}
    for _ in range(2):
        a, b = (Completion.objects.create(prompt=prompt, text=t, source="imported", model_name="m") for t in ("a", "b"))
        task = RankingTask.objects.create(project=project, prompt=prompt, overlap=1)
        TaskCompletion.objects.bulk_create(
            [TaskCompletion(task=task, completion=a, position=0), TaskCompletion(task=task, completion=b, position=1)]
        )
        made["queue_tasks"].append(task.pk)
        good, bad = (Completion.objects.create(prompt=prompt, text=t, source="imported") for t in ("good", "bad"))
        label_task = RankingTask.objects.create(project=project, prompt=prompt, overlap=1)
        TaskCompletion.objects.bulk_create(
            [
                TaskCompletion(task=label_task, completion=good, position=0),
                TaskCompletion(task=label_task, completion=bad, position=1),
            ]
        )
        annotation = Annotation.objects.create(
            task=label_task, import_source=source, status="submitted", submitted_at=now, shown_order=[good.pk, bad.pk]
        )
        Rating.objects.create(annotation=annotation, completion=good, rank=1, likert=6)
        worse = Rating.objects.create(annotation=annotation, completion=bad, rank=2)
        CheckAnswer.objects.create(rating=worse, check_question=toxic, value=True)
        made["label_tasks"].append(label_task.pk)
        made["annotations"].append(annotation.pk)
        Demonstration.objects.create(prompt=prompt, text="ideal", source="d.jsonl")
    Demonstration.objects.create(prompt=prompt, text="ideal", source="written")
    generated = Completion.objects.create(prompt=prompt, text="a", source="model")
    made["generated"] = generated.pk
    made["project"] = project.pk
    return made


@pytest.mark.django_db(transaction=True)
def test_back_fill_keys_the_oldest_of_each_copy_and_keeps_every_row(tmp_path):
    from labeling_app.models import Annotation, Completion, Demonstration, Project, RankingTask
    from labeling_app.services.imports import import_file

    made = _doubled_import(_migrate(BEFORE))
    _migrate(AFTER)
    _migrate(_latest())  # the schema the models below expect (and the one the next tests expect)

    first, second = Completion.objects.filter(text="a", source="imported").order_by("pk")
    assert first.import_key == completion_key("a", "m") and second.import_key is None
    assert Completion.objects.get(pk=made["generated"]).import_key is None  # model outputs are not import rows
    t1, t2 = (RankingTask.objects.get(pk=pk) for pk in made["queue_tasks"])
    assert t1.import_key and t2.import_key and t1.import_key != t2.import_key  # different completion rows
    a1, a2 = (Annotation.objects.get(pk=pk) for pk in made["annotations"])
    good = Completion.objects.filter(text="good").order_by("pk")[0]
    bad = Completion.objects.filter(text="bad").order_by("pk")[0]
    assert a1.import_key == label_key([(good.pk, 1, 6, None), (bad.pk, 2, None, {"toxic": True})])
    assert a2.import_key  # on its own task, so not a copy under the unique rule
    d1, d2, written = Demonstration.objects.order_by("pk")
    assert d1.import_key and d2.import_key is None and written.import_key is None

    def counts():
        return (
            Completion.objects.count(),
            RankingTask.objects.count(),
            Annotation.objects.count(),
            Demonstration.objects.count(),
        )

    before = counts()
    project = Project.objects.get(pk=made["project"])
    assert (
        import_file(
            project=project,
            kind="completions",
            path=write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q", "completions": ["a", "b"], "model": "m"}]),
        ).tasks_existing
        == 1
    )
    pairs = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "prompt": "Q",
                "completions": ["good", "bad"],
                "ranks": [1, 2],
                "ratings": [6, None],
                "checks": {"toxic": [None, True]},
            }
        ],
    )
    assert import_file(project=project, kind="preferences", path=pairs, source_name="hh").annotations_skipped == 1
    assert (
        import_file(
            project=project,
            kind="demonstrations",
            path=write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "completion": "ideal"}]),
        ).demonstrations_skipped
        == 1
    )
    assert counts() == before


@pytest.mark.django_db(transaction=True)
def test_imports_from_before_0011_are_marked_as_not_undoable():
    """Their rows do not say which import made them, so undo must refuse them; jobs made afterwards record their rows."""
    from labeling_app.models import ImportJob

    apps = _migrate([("labeling_app", "0010_page_indexes")])
    project = apps.get_model("labeling_app", "Project").objects.create(
        name="Old", completions_per_task=2, overlap=1, lease_minutes=30
    )
    old = apps.get_model("labeling_app", "ImportJob").objects.create(
        project=project, kind="prompts", status="succeeded"
    )
    _migrate(_latest())
    assert ImportJob.objects.get(pk=old.pk).rows_recorded is False
    assert ImportJob.objects.create(project_id=project.pk, kind="prompts").rows_recorded is True
