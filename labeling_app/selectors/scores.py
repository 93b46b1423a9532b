"""Per completion: reward-model scores (newest reward version first) and a summary of its submitted labels; two queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from django.db.models import Avg, Count, QuerySet

from labeling_app.models import Annotation, Prompt, RankingTask, Rating, TaskCompletion
from rlhf_worker.models import CompletionScore, ModelVersion


@dataclass(frozen=True)
class RewardScore:
    version_id: int
    version_name: str
    score: float


@dataclass
class CompletionSummary:
    """Labels: mean Likert (imports carry none), mean rank (1 = best) and count of submitted labels; scores by reward version."""

    completion_id: int
    mean_likert: float | None = None
    mean_rank: float | None = None
    n_labels: int = 0
    scores: list[RewardScore] = field(default_factory=list)


class CompletionSummaries(dict):
    """completion id -> CompletionSummary; a completion with no labels and no scores reads as an empty summary."""

    def __missing__(self, completion_id: int) -> CompletionSummary:
        return CompletionSummary(completion_id)


def completion_summaries(completion_ids: QuerySet | Iterable[int]) -> CompletionSummaries:
    """Summaries of the given completions (ids, or a values("pk")-style queryset used as a subquery)."""
    if not isinstance(completion_ids, QuerySet):
        completion_ids = list(completion_ids)
    out = CompletionSummaries()
    labels = (
        Rating.objects.filter(completion_id__in=completion_ids, annotation__status=Annotation.Status.SUBMITTED)
        .values("completion_id")
        .annotate(mean_likert=Avg("likert"), mean_rank=Avg("rank"), n_labels=Count("id"))
        .order_by()
    )
    for row in labels:
        out[row["completion_id"]] = CompletionSummary(**row)
    scores = (
        CompletionScore.objects.filter(completion_id__in=completion_ids, model_version__kind=ModelVersion.Kind.REWARD)
        .order_by("completion_id", "-model_version__created_at", "-model_version_id")
        .values_list("completion_id", "model_version_id", "model_version__name", "score")
    )
    for completion_id, version_id, name, score in scores:
        out.setdefault(completion_id, CompletionSummary(completion_id)).scores.append(
            RewardScore(version_id, name, score)
        )
    return out


def prompt_completion_summaries(prompt: Prompt) -> CompletionSummaries:
    return completion_summaries(prompt.completions.values("pk"))


def task_completion_summaries(tasks: QuerySet[RankingTask]) -> CompletionSummaries:
    """For a project's tasks list: every completion of the given tasks (e.g. RankingTask.objects.filter(project=p))."""
    return completion_summaries(TaskCompletion.objects.filter(task__in=tasks).values("completion_id"))
