"""Autopilot pages: every project's autopilot, and one project's settings (admins change them) with its cycles as
pipelines of jobs. GETs only read: cycles start and move on in the scheduler and the job runner
(services.autopilot)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from config.errors import ServiceError
from labeling_app.roles import ADMIN, RESEARCHER, has_role, role_required
from labeling_app.selectors.projects import project_or_404
from labeling_app.selectors.training_data import human_ranking_counts
from rlhf_worker.forms import AutopilotForm
from rlhf_worker.selectors import (
    DEFAULTS_PRESET,
    autopilot_for_project,
    autopilot_projects,
    job_kind_info,
    job_presets,
    pipeline_runs,
)
from rlhf_worker.services.autopilot import (
    autopilot_configure,
    autopilot_pause,
    autopilot_resume,
    cycle_plan,
    pipeline_start,
)
from rlhf_worker.views.jobs import poll_ms


@role_required(RESEARCHER)
def autopilot_list(request):
    return render(request, "jobs/autopilot_list.html", {"rows": autopilot_projects()})


def _preset_names() -> dict[str, list[str]]:
    return {kind: [p.name for p in job_presets(job_kind_info(kind))] for kind in AutopilotForm.STEP_KINDS}


def _form(autopilot, data=None) -> AutopilotForm:
    initial = {}
    if autopilot is not None:
        initial = {
            "every_n_rankings": autopilot.every_n_rankings,
            "include_ppo": autopilot.include_ppo,
            "auto_promote": autopilot.auto_promote,
        }
    presets = (autopilot.presets if autopilot else None) or {}
    initial.update({f"preset_{kind}": presets.get(kind, DEFAULTS_PRESET) for kind in AutopilotForm.STEP_KINDS})
    return AutopilotForm(data, initial=initial, preset_names=_preset_names())


def _render(request, project, autopilot, form, *, status: int = 200):
    runs = pipeline_runs(autopilot=autopilot) if autopilot else []
    counted = human_ranking_counts(project_ids=[project.pk])[project.pk]
    return render(
        request,
        "jobs/autopilot.html",
        {
            "project": project,
            "autopilot": autopilot,
            "form": form,
            "runs": runs,
            "rankings": counted,
            "new_rankings": counted - autopilot.rankings_at_last_cycle if autopilot else None,
            "any_active": any(r["run"].is_active for r in runs),
            "poll_ms": poll_ms(),
            "plan": cycle_plan(include_ppo=autopilot.include_ppo) if autopilot else [],
        },
        status=status,
    )


@role_required(RESEARCHER)
def autopilot_project(request, pk: int):
    """GET: the project's autopilot and its cycles (everyone with the researcher role); POST: set it up or change
    it (admins; 400 with the errors beside the fields when something is wrong)."""
    project = project_or_404(pk)
    autopilot = autopilot_for_project(project_id=project.pk)
    if request.method != "POST":
        return _render(request, project, autopilot, _form(autopilot) if has_role(request.user, ADMIN) else None)
    if not has_role(request.user, ADMIN):
        raise PermissionDenied("Only admins change the autopilot.")
    form = _form(autopilot, request.POST)
    if form.is_valid():
        try:
            created, order_before = autopilot is None, project.queue_order
            autopilot = autopilot_configure(
                project=project,
                every_n_rankings=form.cleaned_data["every_n_rankings"],
                include_ppo=form.cleaned_data["include_ppo"],
                auto_promote=form.cleaned_data["auto_promote"],
                presets=form.presets,
                user=request.user,
            )
        except ServiceError as exc:
            form.apply_error(exc)
        else:
            messages.success(
                request,
                f"Autopilot {'turned on' if created else 'saved'}: a cycle starts after every "
                f"{autopilot.every_n_rankings} new ranking{'s' if autopilot.every_n_rankings != 1 else ''}.",
            )
            if project.queue_order != order_before:
                messages.info(
                    request,
                    f"The project's queue order is now “{project.get_queue_order_display()}”, so each "
                    "cycle's new tasks are labeled first (change it on the project's settings page).",
                )
            return redirect("jobs:autopilot_project", pk=project.pk)
    return _render(request, project, autopilot, form, status=400)


def _autopilot_or_back(request, project):
    autopilot = autopilot_for_project(project_id=project.pk)
    if autopilot is None:
        messages.error(request, "This project has no autopilot yet: turn it on with the form first.")
    return autopilot


@role_required(ADMIN)
@require_POST
def autopilot_pause_view(request, pk: int):
    project = project_or_404(pk)
    autopilot = _autopilot_or_back(request, project)
    if autopilot is not None:
        autopilot_pause(autopilot=autopilot)
        messages.success(request, "Autopilot paused: no cycle starts, and a running cycle starts no next step.")
    return redirect("jobs:autopilot_project", pk=project.pk)


@role_required(ADMIN)
@require_POST
def autopilot_resume_view(request, pk: int):
    project = project_or_404(pk)
    autopilot = _autopilot_or_back(request, project)
    if autopilot is not None:
        autopilot_resume(autopilot=autopilot)
        messages.success(request, "Autopilot resumed.")
    return redirect("jobs:autopilot_project", pk=project.pk)


@role_required(ADMIN)
@require_POST
def autopilot_run_now_view(request, pk: int):
    """Start a cycle now, whatever the count of new rankings (refused while one runs or the autopilot is paused)."""
    project = project_or_404(pk)
    autopilot = _autopilot_or_back(request, project)
    if autopilot is not None:
        try:
            run = pipeline_start(autopilot=autopilot, user=request.user, force=True)
        except ServiceError as exc:
            messages.error(request, f"No cycle started: {exc}.")
        else:
            if run.status == run.Status.FAILED:
                messages.error(request, f"Cycle #{run.pk} stopped at once: {run.reason}")
            else:
                messages.success(request, f"Cycle #{run.pk} started.")
    return redirect("jobs:autopilot_project", pk=project.pk)
