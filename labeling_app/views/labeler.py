"""Labeler pages: the project list to start labeling from, and the task page."""
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from labeling_app.roles import LABELER, role_required
from labeling_app.selectors import labeling as sel
from labeling_app.services.leases import task_assign_next
from labeling_app.markdown import render_markdown


@role_required(LABELER)
def home(request):
    return render(request, "labeler/home.html", {
        "projects": sel.labeler_projects(request.user),
        "today_count": sel.labeler_today_count(request.user),
    })


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
    if annotation.status != annotation.Status.DRAFT:
        messages.info(request, f"You already {annotation.get_status_display().lower()} task {task_id}.")
        return redirect("labeler:home")
    task = annotation.task
    project = task.project
    completions = sel.completions_in_shown_order(annotation)
    checks = sel.active_checks(project)
    lease = sel.lease_for(request.user, task)
    config = {
        "taskId": task.pk,
        "projectId": project.pk,
        "user": request.user.username,
        "completions": [{"id": c.id, "label": c.label, "letter": c.letter, "snippet": c.text[:140]} for c in completions],
        "checks": [c.for_labelers() for c in checks],
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
    return render(request, "labeler/task.html", {
        "task": task,
        "project": project,
        "annotation": annotation,
        "completions": completions,
        "checks": checks,
        "scale": range(1, 8),
        "instructions_html": render_markdown(project.instructions),
        "today_count": sel.labeler_today_count(request.user),
        "lease": lease,
        "config": config,
    })
