"""Review pages: a task with every label on it, where researchers accept or reject labels; and the labeler's
"My labels", where they read the review of their own labels and revise one that is still open."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from config.errors import ServiceError
from labeling_app.roles import LABELER, RESEARCHER, role_required
from labeling_app.selectors import review as sel
from labeling_app.selectors.labeling import annotation_for_labeler
from labeling_app.services.annotations import revision_refusal
from labeling_app.services.review import annotation_review
from labeling_app.views.labeler import labeling_page


# --- researchers ---------------------------------------------------------------------------


@role_required(RESEARCHER)
def task_review(request, pk: int, task_id: int):
    task = sel.task_for_review_or_404(pk, task_id)
    return render(
        request, "researcher/task_review.html", {"project": task.project, "task": task, **sel.task_review(task)}
    )


@require_POST
@role_required(RESEARCHER)
def annotation_review_view(request, pk: int, task_id: int, annotation_id: int):
    """Accept or reject one label (`decision`, `note`; `seen_revision`: the version the page showed)."""
    task = sel.task_for_review_or_404(pk, task_id)
    annotation = sel.annotation_of_task_or_404(task, annotation_id)
    seen = request.POST.get("seen_revision", "")
    try:
        reviewed = annotation_review(
            annotation=annotation,
            reviewer=request.user,
            decision=request.POST.get("decision", ""),
            note=request.POST.get("note", ""),
            seen_revision=int(seen) if seen.isdigit() else None,
        )
    except ServiceError as exc:  # the page has one form per label: the refusal is a notice above them
        messages.error(request, f"Label {annotation.pk} not reviewed: {exc.message}")
        return redirect(f"{reverse('researcher:task_review', args=[pk, task_id])}#label-{annotation.pk}")
    messages.success(
        request,
        f"Label {reviewed.pk} {reviewed.get_review_state_display().lower()}."
        + (
            " It is left out of training data and exports, and its labeler sees your note."
            if reviewed.review_state == reviewed.ReviewState.REJECTED
            else ""
        ),
    )
    return redirect(f"{reverse('researcher:task_review', args=[pk, task_id])}#label-{annotation.pk}")


# --- labelers ------------------------------------------------------------------------------


@role_required(LABELER)
def my_labels(request):
    page = Paginator(sel.my_labels(request.user), sel.MY_LABELS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "labeler/my_labels.html", {"page": page, "labels": page})


@role_required(LABELER)
def my_label(request, task_id: int):
    label = sel.my_label(request.user, task_id)
    return render(
        request,
        "labeler/my_label.html",
        {
            "label": label,
            "task": label.annotation.task,
            "project": label.annotation.task.project,
            "refusal": revision_refusal(label.annotation),
        },
    )


@role_required(LABELER)
def label_revise(request, task_id: int):
    """The labeling page again, filled with the label as it is, to send a revision (the API's revise call)."""
    annotation = annotation_for_labeler(request.user, task_id)
    refusal = revision_refusal(annotation)
    if refusal:
        messages.error(request, refusal)
        if annotation.status == annotation.Status.DRAFT:
            return redirect("labeler:task", task_id=task_id)
        if annotation.status == annotation.Status.SUBMITTED:
            return redirect("labeler:my_label", task_id=task_id)
        return redirect("labeler:my_labels")
    return labeling_page(request, annotation, revise=True)
