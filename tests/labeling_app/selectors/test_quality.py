"""Label-quality figures of a project on a small labeled project, checked against hand-computed values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, Completion, ImportSource, Prompt, Rating
from labeling_app.selectors.quality import agreement_for_project, labeler_stats, project_progress
from labeling_app.services.projects import project_create, task_create
from tests.labeling_app.researcher_fixtures import label

F, T = False, True


@pytest.fixture
def world(researcher, labeler, labeler2):
    project = project_create(
        name="Quality", user=researcher, completions_per_task=3, overlap=2, checks=[("toxic", "Toxic?")]
    )
    tasks = []
    for i in range(5):
        prompt = Prompt.objects.create(project=project, text=f"P{i}")
        tasks.append(
            task_create(
                project=project,
                prompt=prompt,
                completions=[
                    Completion.objects.create(prompt=prompt, text=f"c{j}", source="imported") for j in range(3)
                ],
            )
        )
    t1, t2, t3, t4, _t5 = tasks
    ids = lambda t: [tc.completion_id for tc in t.task_completions.order_by("position")]  # noqa: E731
    label(t1, labeler, [1, 2, 3], [1, 2, 3], {"toxic": [F, F, T]}, seconds=30)
    label(
        t1,
        labeler2,
        [1, 3, 2],
        [1, 3, 3],
        {"toxic": [F, F, T]},
        seconds=120,
        shown_order=[ids(t1)[2], ids(t1)[0], ids(t1)[1]],
    )
    label(t2, labeler, [2, 1, 3], None, {"toxic": [F, T, F]}, seconds=90)
    label(
        t2,
        labeler2,
        [2, 1, 3],
        None,
        {"toxic": [F, F, F]},
        seconds=240,
        shown_order=[ids(t2)[1], ids(t2)[0], ids(t2)[2]],
    )
    label(t3, labeler, [1, 2, 3], None, seconds=60)
    # An imported label on t3 that disagrees completely: kept out of every agreement figure.
    imported = Annotation.objects.create(
        task=t3, import_source=ImportSource.objects.create(name="pub"), status="submitted", submitted_at=timezone.now()
    )
    for cid, rank in zip(ids(t3), [3, 2, 1]):
        Rating.objects.create(annotation=imported, completion_id=cid, rank=rank)
    Assignment.objects.create(task=t4, labeler=labeler, expires_at=timezone.now() + timedelta(minutes=10))
    return project


def test_progress(world):
    progress = project_progress(world)
    # t1, t2, t3 have 2 of 2 labels; t4 is leased now; t5 waits
    assert (progress["tasks"], progress["done"], progress["in_progress"], progress["waiting"]) == (5, 3, 1, 1)
    (today,) = progress["labels_per_day"]
    assert (today["human"], today["imported"]) == (5, 1)


def test_agreement_by_hand(world):
    result = agreement_for_project(world)
    assert result["shared_tasks"] == 2 and result["imported_labels"] == 1  # t3's import is not compared
    # t1: lab1 [1,2,3] vs lab2 [1,3,2]: (0,1) agree, (0,2) agree, (1,2) reversed -> 2 of 3
    # t2: identical rankings -> 3 of 3.  Pooled: 5 of 6.
    ranking = result["ranking"]
    assert (ranking["agreeing"], ranking["comparable"]) == (5, 6)
    assert ranking["pair_agreement"] == pytest.approx(5 / 6)
    # Kendall tau-b: t1 (2 concordant - 1 discordant) / 3 = 1/3; t2: 1. Mean 2/3.
    assert ranking["kendall_tau"] == pytest.approx(2 / 3)
    # Likert units (t1 only): (1,1) (2,3) (3,3) -> alpha 7/9, worked out in test_agreement.py
    assert result["likert"]["alpha"] == pytest.approx(7 / 9) and result["likert"]["units"] == 3
    # toxic, items (task, completion) with two answers: lab1 F F T F T F / lab2 F F T F F F
    # p_o = 5/6; lab1 yes 2 no 4, lab2 yes 1 no 5: p_e = (2*1 + 4*5)/36 = 22/36
    # kappa = (30/36 - 22/36) / (14/36) = 8/14 = 4/7
    (toxic,) = result["checks"]
    assert toxic["kappa_kind"] == "Cohen" and toxic["items"] == 6
    assert toxic["percent"] == pytest.approx(5 / 6) and toxic["kappa"] == pytest.approx(4 / 7)


def test_per_labeler_by_hand(world):
    lab1, lab2 = labeler_stats(world)
    assert (lab1["labeler"], lab1["tasks"], lab2["labeler"], lab2["tasks"]) == ("lab1", 3, "lab2", 2)
    assert lab1["median_seconds"] == pytest.approx(60)  # 30, 60, 90
    assert lab2["median_seconds"] == pytest.approx(180)  # (120 + 240) / 2
    assert lab1["agreement"] == pytest.approx(5 / 6) and lab2["agreement"] == pytest.approx(5 / 6)
    # first shown ranked best: lab1 shown in position order: t1 c0 rank 1 yes, t2 c0 rank 2 no, t3 c0 rank 1 yes -> 2/3
    # lab2: t1 shown c2 first (rank 2) no, t2 shown c1 first (rank 1) yes -> 1/2
    assert lab1["position_bias"] == pytest.approx(2 / 3) and lab2["position_bias"] == pytest.approx(1 / 2)
    assert lab1["chance"] == pytest.approx(1 / 3)
    # t1 lab1 ranks [1,2,3] likert [1,2,3]: all 3 pairs contradict; lab2 [1,3,2] / [1,3,3]: (0,1), (0,2) -> 2
    assert (lab1["contradicting_labels"], lab1["contradicting_pairs"]) == (1, 3)
    assert (lab2["contradicting_labels"], lab2["contradicting_pairs"]) == (1, 2)


def test_quality_pages_render(world, client, researcher, labeler):
    client.force_login(researcher)
    page = client.get(f"/projects/{world.pk}/quality/").content.decode()
    assert "83.3%" in page and "0.778" in page and "0.571" in page and "Cohen" in page
    page = client.get(f"/projects/{world.pk}/quality/labelers/{labeler.pk}/").content.decode()
    assert "lab1 on Quality" in page and "66.7%" in page


def test_problem_rate_reads_each_checks_polarity(researcher, labeler, labeler2, client):
    project = project_create(
        name="Polarity quality",
        user=researcher,
        completions_per_task=2,
        overlap=3,
        checks=[("satisfies_constraints", "Satisfies the constraints", False), ("toxic", "Toxic?")],
    )
    prompt = Prompt.objects.create(project=project, text="P")
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=f"c{j}", source="imported") for j in range(2)],
    )
    label(task, labeler, [1, 2], [7, 2], {"satisfies_constraints": [T, F], "toxic": [F, F]})
    label(task, labeler2, [1, 2], [6, 3], {"satisfies_constraints": [T, T], "toxic": [F, T]})
    # An imported label is not a person's answer: not counted.
    imported = Annotation.objects.create(
        task=task,
        import_source=ImportSource.objects.create(name="pub"),
        status="submitted",
        submitted_at=timezone.now(),
    )
    for tc in task.task_completions.all():
        Rating.objects.create(annotation=imported, completion_id=tc.completion_id, rank=1)
    checks = {c["key"]: c for c in agreement_for_project(project)["checks"]}
    # "satisfies the constraints": 1 "no" of 4 answers is a problem (3 "yes" are not); toxic: 1 "yes" of 4.
    assert (checks["satisfies_constraints"]["problems"], checks["satisfies_constraints"]["answers"]) == (1, 4)
    assert checks["satisfies_constraints"]["problem_rate"] == pytest.approx(1 / 4)
    assert checks["satisfies_constraints"]["problem_word"] == "no" and checks["toxic"]["problem_word"] == "yes"
    assert checks["toxic"]["problem_rate"] == pytest.approx(1 / 4)
    # Agreement compares the answers and does not depend on polarity: the same 1 of 2 items agree on each.
    assert checks["satisfies_constraints"]["percent"] == checks["toxic"]["percent"] == pytest.approx(1 / 2)
    client.force_login(researcher)
    page = client.get(f"/projects/{project.pk}/quality/").content.decode()
    row = page[page.index('data-check="satisfies_constraints"') :]
    row = row[: row.index("</tr>")]
    assert "<td>no</td>" in row and "25.0% <small>(1 of 4)</small>" in row
