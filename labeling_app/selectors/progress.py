"""A labeler's progress on the task page: submitted today, and how many tasks of the project are still theirs to take."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db import connection

from labeling_app.models import Annotation, Project
from labeling_app.roles import LABELER, has_role
from labeling_app.selectors.labeling import start_of_today

# Past this many the page says "1000+": a labeler needs no exact figure there, and the count
# stops early instead of walking every open task of a big project on each task page.
LEFT_CAP = 1000

# One statement, two index walks: today's submissions (annotation_labeler_status_idx), then open
# tasks of the project (task_open_idx) without an annotation of this labeler, at most cap + 1 of
# them. "OFFSET 0" keeps NOT EXISTS a per-row probe of the unique (task, labeler) index, as in the
# hand-out query, rather than an anti-join over all of this labeler's annotations.
_PROGRESS_SQL = """
    SELECT
      (SELECT count(*) FROM labeling_app_annotation a
       WHERE a.labeler_id = %(labeler)s AND a.status = %(submitted)s AND a.submitted_at >= %(since)s),
      (SELECT count(*) FROM (
         SELECT 1 FROM labeling_app_rankingtask t
         WHERE t.project_id = %(project)s AND t.submitted_count < t.overlap AND t.archived_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM labeling_app_annotation a
                           WHERE a.task_id = t.id AND a.labeler_id = %(labeler)s OFFSET 0)
         LIMIT %(limit)s) open)
"""


@dataclass(frozen=True)
class LabelerProgress:
    today: int  # tasks this labeler submitted since local midnight, in any project
    left: int  # open tasks of the project this labeler has not taken yet (at most LEFT_CAP)
    left_more: bool  # more than LEFT_CAP are left


def labeler_progress(user, project: Project) -> LabelerProgress:
    """The labeler's counts for the task page header, in one query.

    "Left" counts the project's live (not archived) tasks that still want labels and that this labeler has not
    submitted, skipped or opened (so the task on screen is not among them); tasks others hold
    right now count too, since they come back if those leases run out.
    """
    if not has_role(user, LABELER):
        raise PermissionDenied("Only labelers have labeling progress.")
    params = {
        "labeler": user.pk,
        "submitted": Annotation.Status.SUBMITTED,
        "since": start_of_today(),
        "project": project.pk,
        "limit": LEFT_CAP + 1,
    }
    with connection.cursor() as cur:
        cur.execute(_PROGRESS_SQL, params)
        today, left = cur.fetchone()
    return LabelerProgress(today=today, left=min(left, LEFT_CAP), left_more=left > LEFT_CAP)
