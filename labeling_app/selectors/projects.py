"""Reads for the researcher's pages: projects with their counts, a project's prompts, checks and demonstrations."""

from __future__ import annotations

from django.db.models import Count, F, Func, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404

from labeling_app.models import CheckQuestion, Completion, Demonstration, Project, Prompt, RankingTask
from labeling_app.selectors.quality import labels_per_day
from labeling_app.selectors.scores import prompt_completion_summaries


def project_or_404(project_id: int) -> Project:
    return get_object_or_404(Project, pk=project_id)


PROJECTS_PER_PAGE = 50
PROMPTS_PER_PAGE = 50


def count_of(related: QuerySet, fk: str = "project") -> Coalesce:
    """The number of `related` rows pointing at the outer row through `fk`, as a correlated subquery.

    Two `Count(..., distinct=True)` over two joins multiply the rows (prompts x tasks: 37M pairs took
    46 s on /projects/); one subquery per count reads each index once per shown row.
    """
    counted = (
        related.filter(**{fk: OuterRef("pk")})
        .order_by()
        .values(fk)
        .annotate(n=Func(F("pk"), function="COUNT"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def projects_with_counts() -> QuerySet[Project]:
    """Every project with `n_prompts` and `n_tasks`; page it, the counts are computed for the rows shown."""
    return Project.objects.annotate(
        n_prompts=count_of(Prompt.objects.all()), n_tasks=count_of(RankingTask.objects.all())
    )


def project_counts(project: Project) -> dict:
    """Prompts (and how many are chat), demonstrations, completions, labels by people and imported labels."""
    days = labels_per_day(project)
    return {
        "prompts": project.prompts.count(),
        "chat_prompts": project.prompts.filter(messages__isnull=False).count(),
        "demonstrations": Demonstration.objects.filter(prompt__project=project).count(),
        "completions": Completion.objects.filter(prompt__project=project).count(),
        "human_labels": sum(d["human"] for d in days),
        "imported_labels": sum(d["imported"] for d in days),
    }


def project_checks(project: Project) -> list[CheckQuestion]:
    """All the project's checks, asked or not, in their order."""
    return list(project.checks.all())


def project_has_tasks(project: Project) -> bool:
    return project.tasks.exists()


def prompts_of_project(project: Project, *, search: str = "") -> QuerySet[Prompt]:
    """The project's prompts, newest first, with `n_demos`, `n_tasks` and `n_completions`; `search` filters the text."""
    prompts = project.prompts.annotate(
        n_demos=count_of(Demonstration.objects.all(), "prompt"),
        n_tasks=count_of(RankingTask.objects.all(), "prompt"),
        n_completions=count_of(Completion.objects.all(), "prompt"),
    ).order_by("-id")
    return prompts.filter(text__icontains=search) if search else prompts


def prompt_or_404(project_id: int, prompt_id: int) -> Prompt:
    return get_object_or_404(Prompt.objects.select_related("project"), pk=prompt_id, project_id=project_id)


def prompt_overview(prompt: Prompt) -> dict:
    """A prompt's page: its demonstrations, its completions (each with `n_tasks` and a label/score `summary`), its tasks."""
    completions = list(prompt.completions.annotate(n_tasks=Count("tasks")).order_by("id"))
    summaries = prompt_completion_summaries(prompt)
    for c in completions:
        c.summary = summaries[c.pk]
    return {
        "demonstrations": prompt.demonstrations.select_related("author"),
        "completions": completions,
        "any_unscored": any(not c.summary.scores for c in completions),
        "tasks": prompt.tasks.order_by("id"),
    }


def demonstration_or_404(project_id: int, prompt_id: int, demonstration_id: int) -> Demonstration:
    return get_object_or_404(
        Demonstration.objects.select_related("prompt__project"),
        pk=demonstration_id,
        prompt_id=prompt_id,
        prompt__project_id=project_id,
    )


def demonstration_is_completion(demonstration: Demonstration) -> bool:
    """Whether the demonstration is also ranked as one of the completions."""
    return demonstration.completions.exists()
