"""Projects: creating one, editing its settings and yes/no checks as one unit, and building its ranking tasks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Greatest, Least
from django.utils.text import slugify

from config.errors import ServiceError
from labeling_app.models import (
    DEFAULT_CHECKS,
    Annotation,
    Assignment,
    CheckQuestion,
    CheckSpec,
    Completion,
    Project,
    ProjectTeamMember,
    Prompt,
    QueueOrder,
    RankingTask,
    TaskCompletion,
)
from labeling_app.roles import LABELER
from labeling_app.validation import NUL, NUL_MESSAGE


def _save_project(project: Project) -> None:
    """Save, turning a clash with another project's name into a ServiceError on `name`."""
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError:
        if Project.objects.filter(name=project.name).exclude(pk=project.pk).exists():
            raise ServiceError(
                f"A project named {project.name!r} already exists; pick another name.", field="name"
            ) from None
        raise


DEFAULT_DISAGREEMENT_THRESHOLD = 0.34


def _check_adaptive_overlap(*, overlap: int, overlap_max: int | None, disagreement_threshold: float) -> int:
    """The maximum overlap to store (`overlap` when none is given: adaptive overlap off), or ServiceError."""
    if overlap_max is None:
        overlap_max = overlap
    if overlap_max < overlap:
        raise ServiceError(
            f"The maximum overlap ({overlap_max}) must be at least the overlap ({overlap}); set it equal "
            f"to the overlap to never add labels.",
            field="overlap_max",
        )
    if not 0 < disagreement_threshold <= 1:
        raise ServiceError(
            f"The disagreement threshold must be above 0 and at most 1 (a share of completion pairs, e.g. "
            f"0.34); got {disagreement_threshold:g}.",
            field="disagreement_threshold",
        )
    return overlap_max


def project_create(
    *,
    name: str,
    user=None,
    instructions: str = "",
    completions_per_task: int = 4,
    overlap: int = 1,
    lease_minutes: int = 30,
    checks: Sequence[CheckSpec | tuple] | None = None,
    overlap_max: int | None = None,
    disagreement_threshold: float = DEFAULT_DISAGREEMENT_THRESHOLD,
) -> Project:
    """A project with its yes/no checks (InstructGPT's defaults unless given).

    A check is a CheckSpec or a tuple of its fields, (key, question[, problem_answer[, serious]]):
    one given as (key, question) flags a problem on "yes" and is serious. Adaptive overlap: a task whose
    labels disagree on at least `disagreement_threshold` of the completion pairs gets another label, up to
    `overlap_max` (None: the overlap, i.e. never).
    """
    specs = [CheckSpec(*c) for c in (DEFAULT_CHECKS if checks is None else checks)]
    overlap_max = _check_adaptive_overlap(
        overlap=overlap, overlap_max=overlap_max, disagreement_threshold=disagreement_threshold
    )
    with transaction.atomic():
        project = Project(
            name=name,
            instructions=instructions,
            completions_per_task=completions_per_task,
            overlap=overlap,
            lease_minutes=lease_minutes,
            created_by=user,
            overlap_max=overlap_max,
            disagreement_threshold=disagreement_threshold,
        )
        _save_project(project)
        CheckQuestion.objects.bulk_create(
            CheckQuestion(
                project=project,
                key=c.key,
                question=c.question,
                position=i,
                problem_answer=c.problem_answer,
                serious=c.serious,
            )
            for i, c in enumerate(specs)
        )
    return project


@dataclass(frozen=True)
class CheckEdit:
    """A researcher's edit of one existing check: the new wording, whether it is still asked, and its
    polarity (which answer flags a problem) and severity; None keeps what is stored."""

    check_id: int
    question: str
    active: bool
    problem_answer: bool | None = None
    serious: bool | None = None


@dataclass(frozen=True)
class NewCheck:
    """A check to add: its question and polarity ("yes is a problem" and serious unless told otherwise)."""

    question: str
    problem_answer: bool = True
    serious: bool = True


def project_update(
    *,
    project: Project,
    name: str,
    instructions: str,
    completions_per_task: int,
    overlap: int,
    lease_minutes: int,
    check_edits: Sequence[CheckEdit] = (),
    new_questions: Sequence[NewCheck | str] = (),
    queue_order: str | None = None,
    queue_source: str | None = None,
    overlap_max: int | None = None,
    disagreement_threshold: float | None = None,
) -> Project:
    """Change a project's settings and its checks in one transaction: everything is saved, or nothing.

    K is fixed once tasks exist; a new overlap applies to the open tasks labelers make (never below
    the labels a task already has), not to imported-label tasks. A new question given as a plain
    string gets the common polarity ("yes" is a problem, serious); blank ones are ignored.
    `queue_order` (a QueueOrder; None keeps it) with `queue_source` (a source_key of the project's tasks,
    needed by "source_first" only) says which open task labelers get next.
    `overlap_max` None turns adaptive overlap off (the overlap); `disagreement_threshold` None keeps
    the stored one. A task keeps the extra labels it was given, within the new maximum.
    Returns the saved project (a fresh instance: `project` itself is left as it was).
    """
    if queue_order is not None:
        _check_queue_order(project, queue_order, queue_source or "")
    if not 2 <= completions_per_task <= 9:
        raise ServiceError("K must be from 2 to 9", field="completions_per_task")
    if overlap < 1:
        raise ServiceError("overlap must be at least 1", field="overlap")
    if lease_minutes < 1:
        raise ServiceError("the lease must be at least 1 minute", field="lease_minutes")
    with transaction.atomic():
        saved = Project.objects.select_for_update().get(pk=project.pk)
        if disagreement_threshold is None:
            disagreement_threshold = saved.disagreement_threshold
        overlap_max = _check_adaptive_overlap(
            overlap=overlap, overlap_max=overlap_max, disagreement_threshold=disagreement_threshold
        )
        if completions_per_task != saved.completions_per_task and saved.tasks.exists():
            raise ServiceError(
                f"K cannot change: the project already has {saved.tasks.count()} tasks built with "
                f"K={saved.completions_per_task}. Make a new project for another K.",
                field="completions_per_task",
            )
        old_overlaps = (saved.overlap, saved.max_overlap)
        saved.name, saved.instructions = name, instructions
        saved.completions_per_task, saved.overlap, saved.lease_minutes = completions_per_task, overlap, lease_minutes
        if queue_order is not None:
            saved.queue_order = queue_order
            saved.queue_source = (queue_source or "") if queue_order == QueueOrder.SOURCE_FIRST else ""
        saved.overlap_max, saved.disagreement_threshold = overlap_max, disagreement_threshold
        _save_project(saved)
        if (overlap, overlap_max) != old_overlaps:
            imported = Exists(Annotation.objects.filter(task=OuterRef("pk"), labeler__isnull=True))
            RankingTask.objects.filter(project=saved).exclude(imported).update(
                overlap=Greatest(Least(overlap + F("extra_labels"), overlap_max), "submitted_count")
            )
        checks = {c.pk: c for c in CheckQuestion.objects.filter(project=saved)}
        for edit in check_edits:
            check = checks.get(edit.check_id)
            if check is None:
                raise ServiceError(
                    f"check #{edit.check_id} is not a check of this project; reload the page",
                    field=f"check-{edit.check_id}-question",
                )
            check_update(
                check=check,
                question=edit.question,
                active=edit.active,
                problem_answer=edit.problem_answer,
                serious=edit.serious,
            )
        for new in new_questions:
            new = NewCheck(new) if isinstance(new, str) else new
            if new.question.strip():
                check_add(project=saved, question=new.question, problem_answer=new.problem_answer, serious=new.serious)
    return saved


def _check_queue_order(project: Project, queue_order: str, queue_source: str) -> None:
    if queue_order not in QueueOrder.values:
        raise ServiceError(
            f"unknown queue order {queue_order!r}: pick one of {', '.join(QueueOrder.values)}", field="queue_order"
        )
    if queue_order != QueueOrder.SOURCE_FIRST:
        return
    if not queue_source:
        raise ServiceError(
            "'Chosen source first' needs a source: pick the source whose tasks come first (or pick another order)",
            field="queue_source",
        )
    if not RankingTask.objects.filter(project=project, source_key=queue_source).exists():
        raise ServiceError(
            f"no task of this project comes from {queue_source!r}: pick one of the sources listed", field="queue_source"
        )


def check_add(
    *, project: Project, question: str, key: str = "", problem_answer: bool = True, serious: bool = True
) -> CheckQuestion:
    """A new yes/no check at the end of the project's list, its key made from the question unless given."""
    question = question.strip()
    if not question:
        raise ServiceError("the question is empty", field="new_question")
    if NUL in question or NUL in key:
        raise ServiceError(f"the check {NUL_MESSAGE}", field="new_question")
    key = slugify(key or question)[:64].replace("-", "_") or "check"
    base, n = key, 2
    while project.checks.filter(key=key).exists():
        key, n = f"{base[:60]}_{n}", n + 1
    position = (project.checks.order_by("-position").values_list("position", flat=True).first() or 0) + 1
    return CheckQuestion.objects.create(
        project=project,
        key=key,
        question=question[:300],
        position=position,
        problem_answer=problem_answer,
        serious=serious,
    )


def check_update(
    *,
    check: CheckQuestion,
    question: str,
    active: bool,
    problem_answer: bool | None = None,
    serious: bool | None = None,
) -> CheckQuestion:
    """Reword, (de)activate or re-polarise a check; a deactivated check is no longer asked, its old answers stay.

    A new polarity or severity also changes how the check's old answers read (KTO labels, problem
    rates): an answer records what the labeler said, the polarity what that answer means.
    """
    question = question.strip()
    if not question:
        raise ServiceError(
            "the question is empty (untick 'asked' to stop asking it)", field=f"check-{check.pk}-question"
        )
    check.question, check.active = question[:300], active
    if problem_answer is not None:
        check.problem_answer = problem_answer
    if serious is not None:
        check.serious = serious
    check.save(update_fields=["question", "active", "problem_answer", "serious"])
    return check


def task_create(
    *, project: Project, prompt: Prompt, completions: Iterable[Completion], shuffle_seed: int | None = None
) -> RankingTask:
    """A ranking task over exactly the project's K completions of one prompt."""
    completions = list(completions)
    if len(completions) != project.completions_per_task:
        raise ValueError(
            f"project {project.name!r} ranks {project.completions_per_task} completions per task, got {len(completions)}"
        )
    if any(c.prompt_id != prompt.pk for c in completions):
        raise ValueError("every completion of a task must answer the task's prompt")
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(completions)
    with transaction.atomic():
        task = RankingTask.objects.create(project=project, prompt=prompt, overlap=project.overlap)
        TaskCompletion.objects.bulk_create(
            TaskCompletion(task=task, completion=c, position=i) for i, c in enumerate(completions)
        )
    return task


def model_completions_create(
    *,
    prompt_id: int,
    texts: Sequence[str],
    model_version_id: int,
    sampling: dict,
    create_task: bool,
    shuffle_seed: int | None = None,
    finish_reasons: Sequence[str] | None = None,
) -> list[Completion]:
    """A policy version's samples of one prompt as model completions (each stores `sampling`, its sample
    index and, when given, its finish reason: "stop" or "length"), plus, with `create_task`, the ranking
    task over them: one transaction, so a task never appears with only some of its completions."""
    prompt = Prompt.objects.select_related("project").get(pk=prompt_id)
    reasons = list(finish_reasons) if finish_reasons is not None else [None] * len(texts)
    with transaction.atomic():
        completions = Completion.objects.bulk_create(
            Completion(
                prompt=prompt,
                text=text,
                source=Completion.Source.MODEL,
                model_version_id=model_version_id,
                sampling={**sampling, "sample_index": i, **({"finish_reason": reason} if reason else {})},
            )
            for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
        )
        if create_task:
            task_create(project=prompt.project, prompt=prompt, completions=completions, shuffle_seed=shuffle_seed)
    return completions


@transaction.atomic
def project_set_team(*, project: Project, team_only: bool, members: Iterable) -> Project:
    """Who may label the project: every labeler (`team_only` False), or only `members`.

    The team is kept either way, so a project can be opened to all and restricted again without
    picking everyone anew. Members must be active labelers. A labeler taken off a team-only project
    no longer gets its tasks, their leases there end (the tasks go back to the team), and their open task
    answers 404; the labels they submitted stay.
    """
    ids = {m if isinstance(m, int) else m.pk for m in members}
    labelers = set(
        get_user_model().objects.filter(pk__in=ids, is_active=True, groups__name=LABELER).values_list("pk", flat=True)
    )
    if ids - labelers:
        names = ", ".join(
            sorted(get_user_model().objects.filter(pk__in=ids - labelers).values_list("username", flat=True))
        )
        raise ServiceError(f"Only active labelers can be in a team; not: {names or 'unknown users'}.", field="members")
    if team_only and not labelers:
        raise ServiceError(
            "A team-only project needs at least one labeler in its team; pick some, or open it to all.", field="members"
        )
    project.team_only = team_only
    project.save(update_fields=["team_only"])
    ProjectTeamMember.objects.filter(project=project).exclude(user_id__in=labelers).delete()
    ProjectTeamMember.objects.bulk_create(
        [ProjectTeamMember(project=project, user_id=pk) for pk in labelers], ignore_conflicts=True
    )
    if team_only:
        # Leases of those left out end now, so their tasks go back to the team at once instead of when the
        # lease runs out. Their drafts stay (hidden while they are outside the team). Lease writers lock the
        # task row first (services/leases.py); so does this.
        leased = RankingTask.objects.filter(project=project, assignments__isnull=False).exclude(
            assignments__labeler_id__in=labelers
        )
        locked = list(
            RankingTask.objects.select_for_update().filter(pk__in=leased.values("pk")).values_list("pk", flat=True)
        )
        Assignment.objects.filter(task_id__in=locked).exclude(labeler_id__in=labelers).delete()
    return project
