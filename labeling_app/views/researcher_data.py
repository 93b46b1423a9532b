"""Researcher pages: bulk import (upload, job progress) and dataset export (streamed download)."""
import re
import unicodedata
from urllib.parse import quote

from django import forms
from django.contrib import messages
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import ImportJob, Project
from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.exports import FORMATS, export_lines
from labeling_app.selectors.imports import (
    import_job_or_404,
    import_job_progress,
    import_job_retryable,
    import_job_running,
    import_result_lines,
    recent_import_jobs,
)
from labeling_app.selectors.labels import DEFAULT_MIN_AGREEMENT, DateRange, LabelFilters
from labeling_app.selectors.projects import project_or_404
from labeling_app.services.imports import MAX_ERRORS, import_job_create, import_job_retry, retention_days


class ImportForm(forms.Form):
    kind = forms.ChoiceField(choices=ImportJob.Kind.choices)
    file = forms.FileField(help_text="JSONL (one JSON object per line) or CSV (prompts, demonstrations).")
    source_name = forms.CharField(required=False, max_length=200, label="Source name",
                                  help_text="For preference labels: the dataset or tool they come from, e.g. hh-rlhf.")
    skip_invalid = forms.BooleanField(required=False, label="Import the valid lines and skip the bad ones",
                                      help_text="Off: one bad line refuses the whole file. On: every skipped line is "
                                                "listed with its reason on the import's page.")

    def clean(self):
        data = super().clean()
        if data.get("kind") == ImportJob.Kind.PREFERENCES and not data.get("source_name", "").strip():
            self.add_error("source_name", "Name the source of these labels (e.g. hh-rlhf); labels are attributed to it, not to a person.")
        return data


@role_required(RESEARCHER)
def import_upload(request, pk: int):
    project = project_or_404(pk)
    form = ImportForm(request.POST or None, request.FILES or None, initial={"kind": request.GET.get("kind", "prompts")})
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        job = import_job_create(project=project, kind=form.cleaned_data["kind"], upload=upload, original_name=upload.name,
                                source_name=form.cleaned_data["source_name"], user=request.user,
                                skip_invalid=form.cleaned_data["skip_invalid"])
        return redirect("researcher:import_job", pk=project.pk, job_id=job.pk)
    return render(request, "researcher/import_form.html", {"project": project, "form": form,
                                                           "jobs": recent_import_jobs(project, 20)})


@role_required(RESEARCHER)
def import_job(request, pk: int, job_id: int):
    """A job's page; POST action=retry runs a failed or lost job's saved file again as a new job."""
    job = import_job_or_404(pk, job_id)
    if request.method == "POST" and request.POST.get("action") == "retry":
        try:
            retry = import_job_retry(job=job, user=request.user, skip_invalid=bool(request.POST.get("skip_invalid")))
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect("researcher:import_job", pk=job.project_id, job_id=job.pk)
        return redirect("researcher:import_job", pk=job.project_id, job_id=retry.pk)
    context = {"project": job.project, "job": job, "progress": import_job_progress(job), "running": import_job_running(job),
               "summary": import_result_lines(job.result, kind=job.kind, source_name=job.source_name),
               "retryable": import_job_retryable(job), "max_errors": MAX_ERRORS, "retention_days": retention_days()}
    # htmx polls the status fragment alone (see researcher/_import_status.html)
    return render(request, "researcher/_import_status.html" if request.htmx else "researcher/import_job.html", context)


class ExportForm(forms.Form):
    format = forms.ChoiceField(required=False, choices=[
        ("pairwise", "Pairwise preferences (TRL: prompt, chosen, rejected)"),
        ("grouped", "Grouped rankings (one line per label, all K completions)"),
        ("sft", "SFT: demonstrations (prompt, completion)"),
        ("kto", "Unpaired KTO labels from the checks (prompt, completion, label)"),
    ], initial="pairwise")
    date_from = forms.CharField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.CharField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    labeler = forms.CharField(required=False, help_text='A username, or "import:<source>" for imported labels.')
    full_overlap = forms.BooleanField(required=False, label="Only tasks with all their labels (full overlap)")
    only_agreeing = forms.BooleanField(required=False, label="Only labels that agree with the task's other labels")
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1, initial=DEFAULT_MIN_AGREEMENT,
                                     help_text="Share of completion pairs ordered the same way as the other labels.")
    include_imported = forms.BooleanField(required=False, initial=True, label="Include imported labels")
    all_chat = forms.BooleanField(required=False, label="Write every prompt as a chat conversation",
                                  help_text="Needed when the project mixes plain and chat prompts: dataset readers want one type per column.")

    def clean(self):
        data = super().clean()
        try:
            DateRange.parse(data.get("date_from"), data.get("date_to"))
        except ServiceError as exc:
            self.add_error(exc.field, exc.message)
        return data


def export_filters(project: Project, data: dict) -> LabelFilters:
    min_agreement = data.get("min_agreement")
    return LabelFilters(
        project_ids=[project.pk], date_from=data.get("date_from"), date_to=data.get("date_to"),
        labeler=data.get("labeler") or None, full_overlap=bool(data.get("full_overlap")),
        only_agreeing=bool(data.get("only_agreeing")),
        min_agreement=DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement,
        include_imported=bool(data.get("include_imported", True)), all_chat=bool(data.get("all_chat")),
    )


@role_required(RESEARCHER)
def export_page(request, pk: int):
    project = project_or_404(pk)
    return render(request, "researcher/export.html", {"project": project, "form": ExportForm(), "formats": FORMATS})


@role_required(RESEARCHER)
def export_download(request, pk: int):
    """The file itself, streamed line by line (no filter given: pairwise, everything, imported included)."""
    project = project_or_404(pk)
    params = request.GET.copy()
    if "include_imported" not in params and "submitted" not in params:
        params["include_imported"] = "on"
    form = ExportForm(params)
    if not form.is_valid():
        return render(request, "researcher/export.html", {"project": project, "form": form, "formats": FORMATS}, status=400)
    fmt = form.cleaned_data["format"] or "pairwise"
    filters = export_filters(project, form.cleaned_data)
    name = f"{project.name}-{fmt}-{timezone.now():%Y%m%d-%H%M}.jsonl"
    response = StreamingHttpResponse(export_lines(fmt, filters), content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = attachment_header(name)
    return response


def attachment_header(name: str) -> str:
    """Content-Disposition for a download named `name`, whatever characters it holds (RFC 6266).

    `filename*` carries the exact name, percent-encoded UTF-8; `filename` an ASCII stand-in for old
    clients: accents dropped, anything but letters, digits, dot, dash and underscore (quotes,
    CR/LF, which would break the header, and spaces) turned into "_". Django's
    content_disposition_header writes one of the two forms only, and passes a newline through.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._") or "export.jsonl"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
