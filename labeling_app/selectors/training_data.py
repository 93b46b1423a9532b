"""Rows the training jobs read, as plain dicts: the one door from rlhf_worker's jobs to the labeling tables.

Rankings for the reward model, demonstrations for SFT, prompts for generation and PPO, completions to
score. Dates go through `labels.DateRange` and labelers are named by `labels.labeler_name`, exactly as in
exports, so a reward model trained on a date range sees the labels an export of that range holds.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from django.db.models import Count, Q

from labeling_app.models import Annotation, Completion, Demonstration, Project, Prompt, TaskCompletion
from labeling_app.selectors.labels import (
    CHUNK_SIZE,
    DateRange,
    DayBound,
    LabelFilters,
    iter_label_rows,
    prompt_value,
    usable_labels_q,
)


def rankings_for_training(
    *,
    project_ids: Sequence[int],
    date_from: DayBound = None,
    date_to: DayBound = None,
    annotation_ids: Sequence[int] | None = None,
    include_imported: bool = True,
    full_overlap: bool = False,
    only_agreeing: bool = False,
) -> Iterator[dict]:
    """Every submitted ranking of the projects (labels a researcher rejected left out): {annotation_id, prompt (text or chat messages),
    completions: [text, ...], ranks: [int, ...] (1 = best, ties equal), labeler (username or
    "import:<source>"), prompt_id}. Task by task; completions in the task's order; labels with ties are
    kept (the reward model skips tied pairs). `annotation_ids` narrows to exactly those labels."""
    filters = LabelFilters(
        project_ids=project_ids,
        date_from=date_from,
        date_to=date_to,
        annotation_ids=annotation_ids,
        include_imported=include_imported,
        full_overlap=full_overlap,
        only_agreeing=only_agreeing,
    )
    for row in iter_label_rows(filters):
        yield {
            "annotation_id": row.annotation_id,
            "prompt": row.prompt,
            "completions": row.completions,
            "ranks": row.ranks,
            "labeler": row.labeler,
            "prompt_id": row.prompt_id,
        }


def ranked_completion_ids(*, project_ids: Sequence[int]) -> Iterator[tuple[list[int], list[int]]]:
    """(completion ids, ranks) of every label the reward job trains on for these projects: the usable rankings
    of `rankings_for_training` with its defaults (imports included), ids in the task's order, 1 = best, ties
    equal. What the score job measures the reward model's uncertainty on."""
    for row in iter_label_rows(LabelFilters(project_ids=project_ids)):
        yield row.completion_ids, row.ranks


def task_completion_ids(*, project_ids: Sequence[int]) -> dict[int, list[int]]:
    """{task id: its completion ids in position order} for every task of the projects (one query)."""
    out: dict[int, list[int]] = {}
    rows = (
        TaskCompletion.objects.filter(task__project_id__in=list(project_ids))
        .order_by("task_id", "position")
        .values_list("task_id", "completion_id")
    )
    for task_id, completion_id in rows.iterator(chunk_size=CHUNK_SIZE):
        out.setdefault(task_id, []).append(completion_id)
    return out


def _chosen(*, project_ids: Sequence[int], prompt_ids: Sequence[int], project_field: str, prompt_field: str) -> Q:
    """Rows of the chosen projects and of the chosen prompts (both given: rows in both; neither: no rows)."""
    if not project_ids and not prompt_ids:
        return Q(pk__in=[])
    q = Q()
    if project_ids:
        q &= Q(**{f"{project_field}__in": list(project_ids)})
    if prompt_ids:
        q &= Q(**{f"{prompt_field}__in": list(prompt_ids)})
    return q


def demonstrations_for_training(
    *,
    project_ids: Sequence[int],
    prompt_ids: Sequence[int] = (),
    date_from: DayBound = None,
    date_to: DayBound = None,
    demonstration_ids: Sequence[int] | None = None,
) -> Iterator[dict]:
    """Every demonstration of the projects (and/or prompts) written in the date range, in id order:
    {prompt (text or chat messages), completion (text), demonstration_id, prompt_id}. `demonstration_ids` instead
    gives exactly those demonstrations (what a resumed SFT job reads again), whatever the other filters say."""
    if demonstration_ids is not None:
        wanted = Q(pk__in=list(demonstration_ids))
    else:
        wanted = _chosen(
            project_ids=project_ids, prompt_ids=prompt_ids, project_field="prompt__project_id", prompt_field="prompt_id"
        ) & DateRange.parse(date_from, date_to).q("created_at")
    qs = Demonstration.objects.filter(wanted).select_related("prompt").order_by("id")
    for demo in qs.iterator(chunk_size=CHUNK_SIZE):
        prompt = demo.prompt
        yield {
            "prompt": prompt_value(prompt.text, prompt.messages),
            "completion": demo.text,
            "demonstration_id": demo.pk,
            "prompt_id": prompt.pk,
        }


def prompts_for_training(
    *,
    project_ids: Sequence[int] = (),
    prompt_ids: Sequence[int] = (),
    date_from: DayBound = None,
    date_to: DayBound = None,
) -> Iterator[dict]:
    """Prompts of the projects (and/or the given prompt ids) created in the date range, in id order:
    {prompt_id, project_id, prompt (text or chat messages), text, completions_per_task (the project's K)}."""
    qs = (
        Prompt.objects.filter(
            _chosen(project_ids=project_ids, prompt_ids=prompt_ids, project_field="project_id", prompt_field="pk"),
            DateRange.parse(date_from, date_to).q("created_at"),
        )
        .order_by("id")
        .values_list("id", "project_id", "text", "messages", "project__completions_per_task")
    )
    for prompt_id, project_id, text, messages, k in qs.iterator(chunk_size=CHUNK_SIZE):
        yield {
            "prompt_id": prompt_id,
            "project_id": project_id,
            "prompt": prompt_value(text, messages),
            "text": text,
            "completions_per_task": k,
        }


def completions_to_score(*, project_ids: Sequence[int]) -> Iterator[dict]:
    """Every completion of the projects, in id order: {completion_id, prompt (text or chat messages), text}."""
    qs = (
        Completion.objects.filter(prompt__project_id__in=list(project_ids))
        .order_by("id")
        .values_list("id", "prompt__text", "prompt__messages", "text")
    )
    for completion_id, prompt_text, messages, text in qs.iterator(chunk_size=CHUNK_SIZE):
        yield {"completion_id": completion_id, "prompt": prompt_value(prompt_text, messages), "text": text}


def completion_count(*, project_ids: Sequence[int]) -> int:
    """How many completions `completions_to_score` yields for these projects."""
    return Completion.objects.filter(prompt__project_id__in=list(project_ids)).count()


def has_rankings(*, project_ids: Sequence[int], date_from: DayBound = None, date_to: DayBound = None) -> bool:
    """Whether `rankings_for_training` with these filters yields at least one label (one EXISTS query)."""
    wanted = usable_labels_q() & DateRange.parse(date_from, date_to).q("submitted_at")
    return Annotation.objects.filter(wanted, task__project_id__in=list(project_ids)).exists()


def human_ranking_counts(*, project_ids: Sequence[int]) -> dict[int, int]:
    """{project id: its submitted rankings by people (imported labels not counted)}, one grouped COUNT; a project
    without any is 0. What the autopilot counts new rankings with."""
    counts = dict(
        Annotation.objects.filter(
            task__project_id__in=list(project_ids), status=Annotation.Status.SUBMITTED, labeler__isnull=False
        )
        .values("task__project_id")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("task__project_id", "n")
    )
    return {pid: counts.get(pid, 0) for pid in project_ids}


def has_demonstrations(
    *, project_ids: Sequence[int], prompt_ids: Sequence[int] = (), date_from: DayBound = None, date_to: DayBound = None
) -> bool:
    """Whether `demonstrations_for_training` with these filters yields at least one row."""
    return Demonstration.objects.filter(
        _chosen(
            project_ids=project_ids, prompt_ids=prompt_ids, project_field="prompt__project_id", prompt_field="prompt_id"
        ),
        DateRange.parse(date_from, date_to).q("created_at"),
    ).exists()


def has_prompts(
    *,
    project_ids: Sequence[int] = (),
    prompt_ids: Sequence[int] = (),
    date_from: DayBound = None,
    date_to: DayBound = None,
) -> bool:
    """Whether `prompts_for_training` with these filters yields at least one row."""
    return Prompt.objects.filter(
        _chosen(project_ids=project_ids, prompt_ids=prompt_ids, project_field="project_id", prompt_field="pk"),
        DateRange.parse(date_from, date_to).q("created_at"),
    ).exists()


def all_project_ids() -> list[int]:
    """Every project's id, in id order: what "no project chosen" means for a job started now."""
    return list(Project.objects.order_by("pk").values_list("pk", flat=True))


def missing_project_ids(project_ids: Sequence[int]) -> list[int]:
    """The ids among `project_ids` that name no project, sorted (a job config naming them is wrong)."""
    found = set(Project.objects.filter(pk__in=list(project_ids)).values_list("pk", flat=True))
    return sorted(set(project_ids) - found)


def project_choices() -> list[tuple[int, str]]:
    """(id, name) of every project, for a picker of a job's data."""
    return list(Project.objects.values_list("pk", "name"))
