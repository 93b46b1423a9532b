"""Many labelers ask for tasks at the same moment on real PostgreSQL: no task over its overlap, none twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.db import connection, transaction
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, Completion, Project, Prompt, QueueOrder, RankingTask, Rating
from labeling_app.selectors import labeling as sel
from labeling_app.services.annotations import annotation_skip, annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, task_create
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings


def build_project(researcher, *, tasks: int, overlap: int, order: str = QueueOrder.OLDEST):
    """`tasks` tasks, every other one from "new-policy", with reward margins on two of every three, handed
    out in queue order `order` (source_first puts "new-policy" first)."""
    project = project_create(
        name=f"concurrency-{tasks}-{overlap}",
        user=researcher,
        completions_per_task=2,
        overlap=overlap,
        checks=[("toxic", "Toxic?")],
    )
    for i in range(tasks):
        prompt = Prompt.objects.create(project=project, text=f"race {i}?")
        task = task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(
                    prompt=prompt, text=f"{i}-{j}", source="imported", model_name="new-policy" if i % 2 else "old-model"
                )
                for j in range(2)
            ],
        )
        if i % 3:
            RankingTask.objects.filter(pk=task.pk).update(uncertainty_margin=(i * 7919 % 13) / 13)
    Project.objects.filter(pk=project.pk).update(
        queue_order=order, queue_source="imported:new-policy" if order == QueueOrder.SOURCE_FIRST else ""
    )
    project.refresh_from_db()
    return project


# The lease and overlap guarantees hold whichever order the queue hands tasks out in.
every_order = pytest.mark.parametrize("order", QueueOrder.values)


def run_in_threads(fn, users):
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def body(user):
        try:
            barrier.wait()
            fn(user)
        except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@every_order
@pytest.mark.django_db(transaction=True)
def test_simultaneous_first_requests_respect_the_overlap(researcher, order):
    """16 labelers, 5 tasks with overlap 2: exactly 10 leases, each task held twice, nobody twice on one."""
    project = build_project(researcher, tasks=5, overlap=2, order=order)
    users = [make_user(f"burst{i}", "labeler") for i in range(16)]
    got: dict[str, int | None] = {}

    def ask(user):
        a = task_assign_next(project=project, labeler=user)
        got[user.username] = a.task_id if a else None

    run_in_threads(ask, users)
    held = Counter(t for t in got.values() if t is not None)
    assert sum(held.values()) == 10 and set(held.values()) == {2}
    assert Assignment.objects.filter(task__project=project).count() == 10


@every_order
@pytest.mark.django_db(transaction=True)
def test_labelers_working_in_parallel_never_overfill_and_never_repeat(researcher, order):
    """12 labelers loop next → submit (some skip) until the queue is empty, all at once."""
    project = build_project(researcher, tasks=20, overlap=3, order=order)
    users = [make_user(f"worker{i}", "labeler") for i in range(12)]
    handed: dict[str, list[int]] = {u.username: [] for u in users}

    def work(user):
        n = 0
        while (a := task_assign_next(project=project, labeler=user)) is not None:
            handed[user.username].append(a.task_id)
            n += 1
            if n % 7 == 0:
                annotation_skip(task=a.task, labeler=user, reason="parallel skip")
            else:
                annotation_submit(task=a.task, labeler=user, ratings=valid_ratings(a.task, user))

    run_in_threads(work, users)
    # A labeler who found every open slot leased stopped early; a skip may have freed one since.
    for user in users:
        work(user)
    for username, tasks in handed.items():
        assert len(tasks) == len(set(tasks)), f"{username} was given a task twice: {tasks}"
    counts = dict(RankingTask.objects.filter(project=project).values_list("id", "submitted_count"))
    submitted = Counter(
        Annotation.objects.filter(task__project=project, status="submitted").values_list("task_id", flat=True)
    )
    assert submitted == Counter({k: v for k, v in counts.items() if v})
    assert all(v <= 3 for v in counts.values())
    # 12 labelers can fill every task: each task ends with exactly its overlap.
    assert set(counts.values()) == {3}
    assert not Assignment.objects.filter(task__project=project).exists()


@every_order
@pytest.mark.django_db(transaction=True)
def test_one_labeler_asking_twice_at_once_holds_one_lease(researcher, order):
    """A double click on "Start labeling" (two requests of one labeler at the same moment) leases one task."""
    project = build_project(researcher, tasks=4, overlap=1, order=order)
    user = make_user("doubleclick", "labeler")
    got = []
    run_in_threads(lambda u: got.append(task_assign_next(project=project, labeler=u).task_id), [user, user, user])
    assert len(set(got)) == 1
    assert Assignment.objects.filter(labeler=user).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_submission_twice_at_once_stores_one_label(demo_project, labeler):
    """A double click on "Submit": both requests read the draft, then both store at the same moment."""
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    reads = [sel.task_for_labeler(labeler, a.task_id) for _ in range(2)]
    results = []
    run_in_threads(lambda task: results.append(annotation_submit(task=task, labeler=labeler, ratings=ratings)), reads)
    assert sorted(r.created for r in results) == [False, True]
    assert len({r.annotation.pk for r in results}) == 1
    assert Rating.objects.filter(annotation__task=a.task).count() == 4
    a.task.refresh_from_db()
    assert a.task.submitted_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_hand_out_renewing_a_lease_that_its_labelers_submit_just_released_hands_out_the_next(demo_project, labeler):
    """ "Next" while the same labeler's submit is committing: the lease it was renewing is gone, so another task comes."""
    first = task_assign_next(project=demo_project, labeler=labeler)
    holding, release = threading.Event(), threading.Event()
    handed: list = []

    def play(role: str) -> None:
        if role == "submit":  # the labeler's submit of the first task, committed only when released
            with transaction.atomic():
                Annotation.objects.filter(task=first.task, labeler=labeler).update(
                    status="submitted", submitted_at=timezone.now()
                )
                Assignment.objects.filter(task=first.task, labeler=labeler).delete()
                holding.set()
                release.wait(30)
        elif role == "next":
            holding.wait(30)
            handed.append(task_assign_next(project=demo_project, labeler=labeler))
        else:  # release the submit once the hand-out waits for the lease row it wants to renew
            holding.wait(30)
            deadline = time.monotonic() + 30
            while not _someone_waits_for_a_row_lock() and time.monotonic() < deadline:
                time.sleep(0.05)
            release.set()

    run_in_threads(play, ["submit", "next", "release"])
    assert handed and handed[0] is not None and handed[0].task_id != first.task_id
    assert Assignment.objects.filter(labeler=labeler).count() == 1


def _someone_waits_for_a_row_lock() -> bool:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cur.fetchone()[0] > 0
