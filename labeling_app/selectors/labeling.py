"""Reads for the labeler's pages and API, with the labeler's authorization built in."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Q
from django.http import Http404
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckQuestion, Completion, Project, RankingTask
from labeling_app.roles import LABELER, has_role


def _require_labeler(user) -> None:
    if not has_role(user, LABELER):
        raise PermissionDenied("Only labelers label tasks.")


def task_for_labeler(user, task_id: int) -> RankingTask:
    """The task, if this labeler was given it (has an annotation on it); 404 otherwise.

    Someone else's task answers 404, not 403, so labelers cannot probe which tasks exist.
    """
    _require_labeler(user)
    task = (
        RankingTask.objects.select_related("project", "prompt")
        .filter(pk=task_id, annotations__labeler=user)
        .first()
    )
    if task is None:
        raise Http404("No such task in your queue.")
    return task


def annotation_for_labeler(user, task_id: int) -> Annotation:
    """The labeler's own annotation of a task (404 if they have none)."""
    _require_labeler(user)
    annotation = Annotation.objects.select_related("task__project", "task__prompt").filter(task_id=task_id, labeler=user).first()
    if annotation is None:
        raise Http404("No such task in your queue.")
    return annotation


def annotation_by_id_for_labeler(user, annotation_id: int) -> Annotation:
    """An annotation by id, only if it is the labeler's own (404 for everyone else's)."""
    _require_labeler(user)
    annotation = Annotation.objects.select_related("task").filter(pk=annotation_id, labeler=user).first()
    if annotation is None:
        raise Http404("No such annotation among yours.")
    return annotation


def project_for_labeler(user, project_id: int) -> Project:
    _require_labeler(user)
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    return project


def _start_of_today() -> datetime:
    now = timezone.localtime()
    return timezone.make_aware(datetime.combine(now.date(), time.min), now.tzinfo)


def labeler_today_count(user, project: Project | None = None) -> int:
    """Tasks this labeler submitted since local midnight (in this project, if given)."""
    qs = Annotation.objects.filter(labeler=user, status=Annotation.Status.SUBMITTED, submitted_at__gte=_start_of_today())
    if project is not None:
        qs = qs.filter(task__project=project)
    return qs.count()


def labeler_projects(user) -> list[Project]:
    """Projects with `open_tasks` and this labeler's `today_count` (submitted today) attached."""
    projects = list(
        Project.objects.annotate(open_tasks=Count("tasks", filter=Q(tasks__submitted_count__lt=F("tasks__overlap"))))
        .order_by("name")
    )
    today = dict(
        Annotation.objects.filter(labeler=user, status=Annotation.Status.SUBMITTED, submitted_at__gte=_start_of_today())
        .values("task__project").annotate(n=Count("id")).values_list("task__project", "n")
    )
    for project in projects:
        project.today_count = today.get(project.pk, 0)
    return projects


@dataclass(frozen=True)
class ShownCompletion:
    id: int
    label: str  # "Response A": its place in the order this labeler sees
    letter: str
    text: str
    cut_at_length_limit: bool = False


def completions_in_shown_order(annotation: Annotation) -> list[ShownCompletion]:
    """The task's completions in the random order recorded on this labeler's annotation."""
    by_id = {c.pk: c for c in Completion.objects.filter(tasks=annotation.task_id)}
    order = [cid for cid in annotation.shown_order if cid in by_id] + sorted(set(by_id) - set(annotation.shown_order))
    return [
        ShownCompletion(id=cid, label=f"Response {chr(65 + i)}", letter=chr(65 + i), text=by_id[cid].text,
                        cut_at_length_limit=by_id[cid].cut_at_length_limit)
        for i, cid in enumerate(order)
    ]


def active_checks(project: Project) -> list[CheckQuestion]:
    return list(CheckQuestion.objects.filter(project=project, active=True))


def lease_for(user, task: RankingTask) -> Assignment | None:
    return Assignment.objects.filter(task=task, labeler=user).first()
