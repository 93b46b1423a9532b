"""Archiving and restoring ranking tasks: an archived task leaves the labelers' queue, its labels stay.

What archiving means, everywhere:
- the hand-out (labeling_task_assign_next, migration 0012_task_archive) never gives out an archived task,
  and a labeler's own lease on one does not come back to them;
- a labeler who has it open cannot submit it or renew the lease (409, `TASK_ARCHIVED`); their draft
  and lease rows are left as they are, so a restore while the lease lives gives them their task back;
- counts of open work (labeler progress, the labeler's project list, project progress) leave it out;
- its submitted labels stay in exports and training data: labels are data, the archive only stops new work.
A submit that commits in the same instant as the archive may still land: it is then kept like any label.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from labeling_app.models import Project, RankingTask

TASK_ARCHIVED = (
    "This task was archived by the project's researchers and takes no more labels. Nothing was "
    "submitted; your answers stay in your draft. Take the next task."
)


def _of_project(project: Project, tasks: QuerySet[RankingTask]) -> QuerySet[RankingTask]:
    # By id through a subquery: `tasks` may carry the browser's filters (raw SQL, joins) that UPDATE cannot take.
    return RankingTask.objects.filter(project=project, pk__in=tasks.order_by().values("pk"))


def tasks_archive(*, project: Project, tasks: QuerySet[RankingTask]) -> int:
    """Archive those of `tasks` (the project's) that are live; returns how many were archived now."""
    with transaction.atomic():
        return _of_project(project, tasks).filter(archived_at__isnull=True).update(archived_at=timezone.now())


def tasks_restore(*, project: Project, tasks: QuerySet[RankingTask]) -> int:
    """Put those of `tasks` (the project's) that are archived back in the queue; returns how many."""
    with transaction.atomic():
        return _of_project(project, tasks).filter(archived_at__isnull=False).update(archived_at=None)
