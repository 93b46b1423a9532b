"""Jobs pages: list, start form per kind, a job's live page (htmx fragment + JSON series), cancel, re-run, resume.

GETs only read: marking lost jobs and re-queueing vanished ones is the scheduler's sweep (services.jobs.jobs_sweep)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from urllib.parse import urlencode

from django.http import Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from config.errors import ServiceError
from labeling_app.roles import ADMIN, RESEARCHER, role_required
from rlhf_worker.forms import JobConfigForm
from rlhf_worker.models import JobPreset, TrainingJob
from rlhf_worker.selectors import job_config_to_copy, job_get, job_kind_info, job_kinds, job_preset_get, job_presets
from rlhf_worker.selectors import job_list as select_jobs
from rlhf_worker.selectors import job_resumable, pipeline_step_of_job
from rlhf_worker.selectors import job_series as select_series
from rlhf_worker.services.jobs import job_cancel, job_rerun, job_resume, job_start
from rlhf_worker.services.presets import job_notices_dismiss, job_preset_delete, job_preset_save

LOG_TAIL_LINES = 60


def poll_ms() -> int:
    """How often job pages refresh while a job runs (settings.JOB_POLL_SECONDS, default 2 s)."""
    return int(1000 * float(getattr(settings, "JOB_POLL_SECONDS", 2.0)))


@role_required(RESEARCHER)
def job_list(request):
    kind = request.GET.get("kind") or None
    status = request.GET.get("status") or None
    jobs = select_jobs(
        kind=kind if kind in TrainingJob.Kind.values else None,
        status=status if status in TrainingJob.Status.values else None,
    )
    return render(
        request,
        "jobs/list.html",
        {
            "jobs": jobs,
            "kinds": job_kinds(),
            "statuses": TrainingJob.Status.choices,
            "kind_filter": kind,
            "status_filter": status,
            "any_running": any(not j.is_finished for j in jobs),
            "poll_ms": poll_ms(),
        },
    )


def _kind_or_404(kind: str):
    if kind not in TrainingJob.Kind.values:
        raise Http404(f"unknown job kind {kind!r}")
    return job_kind_info(kind)


def _job_or_404(pk: int) -> TrainingJob:
    job = job_get(pk=pk)
    if job is None:
        raise Http404(f"no job #{pk}")
    return job


def _config_form(info, data=None, *, initial=None) -> JobConfigForm:
    return JobConfigForm(
        data, config_cls=info.config_cls, job_kind=info.kind, initial_config=initial, common_fields=info.common_fields
    )


def _render_start(request, info, form, *, status: int = 200, **extra):
    presets = job_presets(info) if form else []
    context = {
        "info": info,
        "form": form,
        "presets": presets,
        "saved_presets": [p for p in presets if not p.builtin],
        **extra,
    }
    return render(request, "jobs/start.html", context, status=status)


@role_required(ADMIN)
def job_start_form(request, kind: str):
    """GET: the form, prefilled from ?preset=<name> or ?from=<job id>; POST: start the job (400 and every error
    listed at the top, each beside its field, when something is wrong)."""
    info = _kind_or_404(kind)
    if not info.available:
        return _render_start(request, info, None)
    if request.method == "POST":
        form = _config_form(info, request.POST)
        status = 400
        if form.is_valid():
            try:
                job = job_start(kind=kind, config=form.config_dict, user=request.user)
            except ServiceError as exc:
                form.apply_error(exc)
                if exc.status == 503:  # the broker is down: the form, kept, says so
                    status = 503
            else:
                messages.success(request, f"{info.label} job #{job.pk} queued.")
                return redirect("jobs:detail", pk=job.pk)
        return _render_start(
            request,
            info,
            form,
            status=status,
            queue_down=status == 503,
            preset_name=request.POST.get("preset_name", ""),
            preset=job_preset_get(info, request.POST.get("preset", "")),
        )
    initial, source, preset = None, request.GET.get("from"), None
    if source and source.isdigit():
        initial = job_config_to_copy(pk=int(source), kind=kind)
    elif request.GET.get("preset"):
        preset = job_preset_get(info, request.GET["preset"])
        if preset is None:
            messages.error(
                request, f"There is no {info.label} preset called {request.GET['preset']!r}; showing the defaults."
            )
        else:
            initial = preset.config
    return _render_start(
        request,
        info,
        _config_form(info, initial=initial),
        source=source,
        preset=preset,
        preset_name=preset.name if preset and not preset.builtin else "",
    )


@role_required(ADMIN)
@require_POST
def job_preset_save_view(request, kind: str):
    """Save the start form's settings as a named preset of this job kind (checked like a start, minus the data)."""
    info = _kind_or_404(kind)
    if not info.available:
        raise Http404(f"{info.label} jobs are not available")
    form = _config_form(info, request.POST)
    name = request.POST.get("preset_name", "")
    if form.is_valid():
        try:
            preset, created = job_preset_save(kind=kind, name=name, config=form.config_dict, user=request.user)
        except ServiceError as exc:
            form.apply_error(exc)
        else:
            messages.success(request, f"Preset {preset.name!r} {'saved' if created else 'updated'}.")
            return redirect(f"{reverse('jobs:start', kwargs={'kind': kind})}?{urlencode({'preset': preset.name})}")
    return _render_start(
        request,
        info,
        form,
        status=400,
        preset_name=name,
        saving_preset=True,
        preset=job_preset_get(info, request.POST.get("preset", "")),
    )


@role_required(ADMIN)
@require_POST
def job_preset_delete_view(request, pk: int):
    preset = JobPreset.objects.filter(pk=pk).first()
    if preset is None:
        raise Http404(f"no preset #{pk}")
    job_preset_delete(preset=preset)
    messages.success(request, f"Preset {preset.name!r} deleted.")
    return redirect("jobs:start", kind=preset.kind)


@role_required(ADMIN)
@require_POST
def job_notices_dismiss_view(request):
    """Mark the notices of ended jobs seen up to the time the page showed (`until`), then go back."""
    until = parse_datetime(request.POST.get("until", ""))
    if until is None:
        return HttpResponseBadRequest("until must be the ISO time of the newest ended job the notice showed")
    job_notices_dismiss(user=request.user, until=until)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse("jobs:list")
    return redirect(back)


def _live_context(request, job: TrainingJob) -> dict:
    log_lines = (job.log or "").splitlines()[-LOG_TAIL_LINES:]
    return {
        "job": job,
        "log_tail": "\n".join(log_lines),
        "poll_ms": poll_ms(),
        "training_queue": settings.TRAINING_QUEUE,
        "heartbeat_age": _age_seconds(job.heartbeat_at),
        "resumable": job.is_finished and job_resumable(job=job),
    }


def _age_seconds(when):
    return (timezone.now() - when).total_seconds() if when else None


@role_required(RESEARCHER)
def job_detail(request, pk: int):
    job = _job_or_404(pk)
    context = _live_context(request, job)
    context["config_items"] = sorted((job.config or {}).items())
    context["pipeline_step"] = pipeline_step_of_job(job_id=job.pk)
    return render(request, "jobs/detail.html", context)


@role_required(RESEARCHER)
def job_live(request, pk: int):
    """The part of a job's page that changes while it runs; htmx swaps it every few seconds and the
    fragment drops its own polling trigger once the job has finished."""
    return render(request, "jobs/_live.html", _live_context(request, _job_or_404(pk)))


@role_required(RESEARCHER)
def job_series(request, pk: int):
    """JSON: metric points newer than ?after=<id>, grouped into charts (the page polls it)."""
    job = _job_or_404(pk)
    try:
        after = max(0, int(request.GET.get("after", 0)))
    except ValueError:
        after = 0
    return JsonResponse(select_series(job=job, after_id=after))


@role_required(ADMIN)
@require_POST
def job_cancel_view(request, pk: int):
    job = job_cancel(job=_job_or_404(pk))
    if job.status == TrainingJob.Status.CANCELLED:
        messages.success(request, f"Job #{job.pk} cancelled.")
    elif job.cancel_requested and not job.is_finished:
        messages.success(request, f"Cancel requested: job #{job.pk} stops after its current step.")
    else:
        messages.info(request, f"Job #{job.pk} had already finished ({job.get_status_display().lower()}).")
    return redirect("jobs:detail", pk=job.pk)


@role_required(ADMIN)
@require_POST
def job_rerun_view(request, pk: int):
    old = _job_or_404(pk)
    try:
        job = job_rerun(job=old, user=request.user)
    except ServiceError as exc:
        messages.error(request, f"Could not re-run job #{old.pk}: {exc}. Edit the settings and start it again.")
        return redirect(f"{reverse('jobs:start', kwargs={'kind': old.kind})}?from={old.pk}")
    messages.success(request, f"Job #{job.pk} queued with the settings of job #{old.pk}.")
    return redirect("jobs:detail", pk=job.pk)


@role_required(ADMIN)
@require_POST
def job_resume_view(request, pk: int):
    old = _job_or_404(pk)
    try:
        job = job_resume(job=old, user=request.user)
    except ServiceError as exc:
        messages.error(request, f"Could not resume job #{old.pk}: {exc}")
        return redirect("jobs:detail", pk=old.pk)
    messages.success(request, f"Job #{job.pk} queued: it continues job #{old.pk} from its last checkpoint.")
    return redirect("jobs:detail", pk=job.pk)
