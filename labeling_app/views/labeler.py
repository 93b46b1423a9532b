"""Labeler pages: the project list to start labeling from, and the task page."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from labeling_app.roles import LABELER, role_required
from labeling_app.selectors import labeling as sel
from labeling_app.selectors.progress import labeler_progress
from labeling_app.services.leases import task_assign_next
from labeling_app.markdown import render_markdown

# Long enough to fill the widest ranking row; the row's CSS ellipsis cuts it to the width there is.
PREVIEW_CHARS = 240


@role_required(LABELER)
def home(request):
    return render(
        request,
        "labeler/home.html",
        {
            "projects": sel.labeler_projects(request.user),
            "today_count": sel.labeler_today_count(request.user),
        },
    )


@require_POST
@role_required(LABELER)
def next_task(request, project_id: int):
    project = sel.project_for_labeler(request.user, project_id)
    assignment = task_assign_next(project=project, labeler=request.user)
    if assignment is None:
        messages.success(request, f"Nothing left for you in “{project.name}” right now. Thank you!")
        return redirect("labeler:home")
    return redirect("labeler:task", task_id=assignment.task_id)


@role_required(LABELER)
def task(request, task_id: int):
    annotation = sel.annotation_for_labeler(request.user, task_id)
    if annotation.status == annotation.Status.SUBMITTED:
        messages.info(
            request,
            f"You already submitted task {task_id}. Here is your label; you can revise it until "
            "a researcher accepts it.",
        )
        return redirect("labeler:my_label", task_id=task_id)
    if annotation.status != annotation.Status.DRAFT:
        messages.info(request, f"You already {annotation.get_status_display().lower()} task {task_id}.")
        return redirect("labeler:home")
    return labeling_page(request, annotation)


def labeling_page(request, annotation, *, revise: bool = False):
    """The labeling page for the labeler's annotation: a draft to submit, or (`revise`) a submitted label to revise,
    filled with the label as it is and sent to the revise call instead (no lease, no skip, no server draft)."""
    task = annotation.task
    if task.archived_at is not None:
        messages.info(request, f"Task {task.pk} was archived by the project's researchers; it takes no more labels.")
        return redirect("labeler:home")
    project = task.project
    completions = sel.completions_in_shown_order(annotation)
    checks = sel.active_checks(project)
    checks_shown = [{**c.for_labelers(), "short": _short_label(c.key), "problem_word": c.problem_word} for c in checks]
    config = {
        "taskId": task.pk,
        "projectId": project.pk,
        "user": request.user.username,
        "completions": [
            {
                "id": c.id,
                "label": c.label,
                "letter": c.letter,
                "snippet": _preview(c.text),
                "cut": c.cut_at_length_limit,
            }
            for c in completions
        ],
        "checks": checks_shown,
        "draft": annotation.draft or {},
        "leaseMinutes": project.lease_minutes,
        "urls": {
            "draft": reverse("api:label-draft", args=[task.pk]),
            "submit": reverse("api:label-submit", args=[task.pk]),
            "skip": reverse("api:label-skip", args=[task.pk]),
            "renew": reverse("api:label-renew", args=[task.pk]),
            "next": reverse("api:label-next", args=[project.pk]),
            "home": reverse("labeler:home"),
        },
    }
    if revise:
        config.update(
            mode="revise",
            draft=label_as_draft(annotation, asked={c.key for c in checks}),
            openedAt=timezone.now().isoformat(),
            urls={
                "submit": reverse("api:label-revise", args=[task.pk]),
                "home": reverse("labeler:my_label", args=[task.pk]),
            },
        )
    return render(
        request,
        "labeler/task.html",
        {
            "task": task,
            "project": project,
            "annotation": annotation,
            "completions": completions,
            "checks": checks_shown,
            "scale": range(1, 8),
            "instructions_html": render_markdown(project.instructions),
            "progress": None if revise else labeler_progress(request.user, project),
            "lease": None if revise else sel.lease_for(request.user, task),
            "revise": revise,
            "config": config,
        },
    )


def label_as_draft(annotation, *, asked: set[str]) -> dict:
    """A submitted label in the shape of the page's draft, so the page opens showing it (ranking as given).
    Only the answers to checks still `asked` come along: a revision answers the project's checks as they are now."""
    ratings = []
    tiers: dict[int, list[int]] = {}
    for rating in annotation.ratings.prefetch_related("check_answers__check_question"):
        ratings.append(
            {
                "completion": rating.completion_id,
                "likert": rating.likert,
                "rank": rating.rank,
                "checks": {
                    a.check_question.key: a.value for a in rating.check_answers.all() if a.check_question.key in asked
                },
            }
        )
        tiers.setdefault(rating.rank, []).append(rating.completion_id)
    return {
        "ratings": ratings,
        "comment": annotation.comment,
        "ui": {"tiers": [tiers[rank] for rank in sorted(tiers)], "touched": True, "current": 0, "savedAt": 0},
    }


def _preview(text: str) -> str:
    """An answer on one line for its ranking row: runs of spaces and line breaks become one space, so a
    list reads "1. First 2. Second" (each marker next to its item) instead of stopping after its first line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1].rstrip() + "…"


def _short_label(key: str) -> str:
    """A check's name on its compact toggle: its key in words ("fails_instruction" -> "fails instruction")."""
    return key.replace("_", " ").replace("-", " ")
