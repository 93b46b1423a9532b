"""Undo a finished import as a whole: delete the rows it created that nothing else uses, in one transaction.

An import is undoable while no human label depends on it: a labeler's draft or submitted label on a
task the import created refuses the undo (the message says how many). What the import merely
reused (a prompt already in the project, a completion another file brought) is not its own and
stays; what it created but others have used since stays too (see `import_undo_plan`). The job row
stays, marked undone with who and when, so the history of imports is kept; importing the file again
afterwards creates the rows anew.

Concurrency: the tasks the import created are locked (FOR UPDATE) before the human labels are
counted. A labeler's label starts as the draft the queue writes when it hands the task out, and the
queue locks the task row to do so (labeling_task_assign_next, FOR UPDATE ... SKIP LOCKED): a task
being handed out right now is waited for and its draft counted; a task the undo holds is skipped by
the queue, and is gone when the undo commits. Drafts and submissions after that update the existing
annotation, which was counted.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.db.models.functions import Greatest
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import ImportJob, RankingTask
from labeling_app.selectors.imports import UNDO_KINDS, import_job_undo_refusal, import_undo_plan


def import_job_undo(*, job: ImportJob, user) -> ImportJob:
    """Delete what `job` created and mark it undone; ServiceError (409) when it cannot be undone, with why."""
    try:
        with transaction.atomic():
            return _undo(job.pk, user)
    except IntegrityError as exc:  # another import started using these rows between our reads and the commit
        raise ServiceError(
            "Another import is using rows of this import right now; nothing was undone. Try again "
            "when it has finished.",
            status=409,
        ) from exc


def _undo(job_id: int, user) -> ImportJob:
    job = ImportJob.objects.select_for_update(of=("self",)).select_related("undone_by").get(pk=job_id)
    refusal = import_job_undo_refusal(job)
    if refusal:
        raise ServiceError(refusal, status=409)
    # Lock the tasks first: from here on no label can be added to them (see the module's docstring).
    list(
        RankingTask.objects.filter(import_job_id=job.pk).order_by("pk").select_for_update().values_list("pk", flat=True)
    )
    plan = import_undo_plan(job)
    if plan.human_labels:
        n = plan.human_labels
        raise ServiceError(
            f"{n} label{'s' if n != 1 else ''} by labelers (drafts included) depend{'s' if n == 1 else ''} on tasks this import "
            f"created, so it cannot be undone: undoing it would delete {'them' if n != 1 else 'it'}. "
            f"Nothing was changed.",
            status=409,
        )
    deleted: dict[str, int] = {}
    # Imported labels on tasks that stay (another import made the task) leave; the task stays closed:
    # its overlap drops by the labels removed (a label task's overlap is the number of its labels).
    stay = plan.annotations.exclude(task__in=plan.tasks).values("task_id").annotate(n=Count("pk")).order_by()
    lowered = {row["task_id"]: row["n"] for row in stay}
    for kind in UNDO_KINDS:
        queryset = getattr(plan, kind)
        _, per_model = queryset.delete()
        deleted[kind] = per_model.get(queryset.model._meta.label, 0)
        if kind == "annotations":
            for task_id, n in lowered.items():  # after the delete: the trigger has lowered submitted_count
                RankingTask.objects.filter(pk=task_id).update(
                    overlap=Greatest(F("overlap") - n, F("submitted_count"), 1)
                )
    kept = {kind: plan.created[kind] - deleted[kind] for kind in UNDO_KINDS}
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.UNDONE,
        undone_at=timezone.now(),
        undone_by=user,
        undo_result={"deleted": deleted, "kept": kept},
    )
    job.refresh_from_db()
    return job
