"""Researcher pages: bulk import (upload, job progress) and dataset export (streamed download)."""

import os
import re
import unicodedata
from urllib.parse import quote

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from config.errors import ServiceError
from labeling_app.models import ImportJob, Project
from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.export_preview import export_count, export_preview, preview_text
from labeling_app.selectors.exports import (
    EMPTY_SELECTION,
    FORMATS,
    export_features as export_features_of,
    export_file_name,
    export_filters,
    export_lines,
    export_parquet_chunks,
)
from labeling_app.selectors.imports import (
    UNDO_WORDS,
    import_job_counts,
    import_job_or_404,
    import_job_progress,
    import_job_retryable,
    import_job_running,
    import_job_undo_refusal,
    import_jobs_of_project,
    import_result_lines,
    import_undo_plan,
    import_undo_summary,
)
from labeling_app.selectors.labels import DEFAULT_MIN_AGREEMENT, DateRange, rejected_left_out
from labeling_app.selectors.projects import project_or_404
from labeling_app.selectors.quality import extra_label_counts
from labeling_app.services.import_undo import import_job_undo
from labeling_app.services.imports import MAX_ERRORS, import_job_create, import_job_retry, retention_days

IMPORTS_PER_PAGE = 20


class ImportForm(forms.Form):
    kind = forms.ChoiceField(choices=ImportJob.Kind.choices)
    file = forms.FileField(help_text="JSONL (one JSON object per line) or CSV (prompts, demonstrations).")
    source_name = forms.CharField(
        required=False,
        max_length=200,
        label="Source name",
        help_text="For preference labels: the dataset or tool they come from, e.g. hh-rlhf.",
    )
    skip_invalid = forms.BooleanField(
        required=False,
        label="Import the valid lines and skip the bad ones",
        help_text="Off: one bad line refuses the whole file. On: every skipped line is "
        "listed with its reason on the import's page.",
    )

    def clean(self):
        data = super().clean()
        if data.get("kind") == ImportJob.Kind.PREFERENCES and not data.get("source_name", "").strip():
            self.add_error(
                "source_name",
                "Name the source of these labels (e.g. hh-rlhf); labels are attributed to it, not to a person.",
            )
        return data


@role_required(RESEARCHER)
def import_upload(request, pk: int):
    project = project_or_404(pk)
    form = ImportForm(request.POST or None, request.FILES or None, initial={"kind": request.GET.get("kind", "prompts")})
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        job = import_job_create(
            project=project,
            kind=form.cleaned_data["kind"],
            upload=upload,
            original_name=upload.name,
            source_name=form.cleaned_data["source_name"],
            user=request.user,
            skip_invalid=form.cleaned_data["skip_invalid"],
        )
        return redirect("researcher:import_job", pk=project.pk, job_id=job.pk)
    page = Paginator(import_jobs_of_project(project), IMPORTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [(job, import_job_counts(job)) for job in page]
    return render(
        request, "researcher/import_form.html", {"project": project, "form": form, "page": page, "rows": rows}
    )


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
    context = {
        "project": job.project,
        "job": job,
        "progress": import_job_progress(job),
        "running": import_job_running(job),
        "summary": import_result_lines(job.result, kind=job.kind, source_name=job.source_name),
        "retryable": import_job_retryable(job),
        "max_errors": MAX_ERRORS,
        "retention_days": retention_days(),
        "undone_summary": import_undo_summary(job.undo_result.get("deleted", {})),
    }
    if job.status == ImportJob.Status.SUCCEEDED and not request.htmx:
        context["undo_refusal"] = import_job_undo_refusal(job)
        if not context["undo_refusal"]:
            plan = import_undo_plan(job)
            counts = plan.counts()
            context["undo"] = {
                "human_labels": plan.human_labels,
                "rows": [
                    (word, counts[kind], plan.created[kind] - counts[kind])
                    for kind, word in UNDO_WORDS.items()
                    if plan.created[kind]
                ],
            }
    # htmx polls the status fragment alone (see researcher/_import_status.html)
    return render(request, "researcher/_import_status.html" if request.htmx else "researcher/import_job.html", context)


@require_POST
@role_required(RESEARCHER)
def import_undo(request, pk: int, job_id: int):
    """Undo a finished import as a whole (the job page asks to confirm first, showing what goes)."""
    job = import_job_or_404(pk, job_id)
    try:
        job = import_job_undo(job=job, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Import undone: deleted {import_undo_summary(job.undo_result['deleted'])}.")
    return redirect("researcher:import_job", pk=job.project_id, job_id=job.pk)


class ExportForm(forms.Form):
    format = forms.ChoiceField(
        required=False,
        choices=[
            ("pairwise", "Pairwise preferences (TRL: prompt, chosen, rejected)"),
            ("grouped", "Grouped rankings (one line per label, all K completions)"),
            ("sft", "SFT: demonstrations (prompt, completion)"),
            ("kto", "Unpaired KTO labels from the checks (prompt, completion, label)"),
        ],
        initial="pairwise",
    )
    file = forms.ChoiceField(
        required=False,
        label="File type",
        initial="jsonl",
        choices=[
            ("jsonl", "JSONL (one JSON object per line; load with the Features file below)"),
            ("parquet", "Parquet (typed columns, the schema inside the file)"),
        ],
    )
    date_from = forms.CharField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.CharField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    labeler = forms.CharField(required=False, help_text='A username, or "import:<source>" for imported labels.')
    full_overlap = forms.BooleanField(required=False, label="Only tasks with all their labels (full overlap)")
    only_agreeing = forms.BooleanField(required=False, label="Only labels that agree with the task's other labels")
    min_agreement = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        initial=DEFAULT_MIN_AGREEMENT,
        help_text="Share of completion pairs ordered the same way as the other labels.",
    )
    include_imported = forms.BooleanField(required=False, initial=True, label="Include imported labels")
    all_chat = forms.BooleanField(
        required=False,
        label="Write every prompt as a chat conversation",
        help_text="A selection with any chat prompt is written as chat anyway (plain prompts as one "
        "user turn), so each column has one type; tick this for chat in any case.",
    )

    def clean(self):
        data = super().clean()
        try:
            DateRange.parse(data.get("date_from"), data.get("date_to"))
        except ServiceError as exc:
            self.add_error(exc.field, exc.message)
        data["format"] = data.get("format") or "pairwise"
        data["file"] = data.get("file") or "jsonl"
        return data


def _export_form(request) -> ExportForm:
    """The export form read from the query; with no filter given: pairwise, everything, imported labels included
    (a form that was submitted says include_imported by its presence, and its hidden `submitted`)."""
    params = request.GET.copy()
    if "include_imported" not in params and "submitted" not in params:
        params["include_imported"] = "on"
    params.setdefault("min_agreement", str(DEFAULT_MIN_AGREEMENT))  # shown in the bound form, as its initial would be
    return ExportForm(params)


def _export_context(project: Project, form: ExportForm) -> dict:
    context = {"project": project, "form": form, "formats": FORMATS, "empty_message": EMPTY_SELECTION}
    if form.is_valid():
        fmt = form.cleaned_data["format"]
        filters = export_filters([project.pk], form.cleaned_data)
        preview = export_preview(fmt, filters)
        context.update(
            preview=preview,
            fmt=fmt,
            rejected_left_out=0 if fmt == "sft" else rejected_left_out(filters),
            extra_labels=extra_label_counts(project),
            preview_rows=[[preview_text(row.get(column)) for column in preview.columns] for row in preview.rows],
        )
    return context


@role_required(RESEARCHER)
def export_page(request, pk: int):
    """The export form and, for the selection it describes, the row count and the first rows (htmx swaps them on change)."""
    project = project_or_404(pk)
    form = _export_form(request)
    context = _export_context(project, form)
    if request.htmx:  # htmx swaps 2xx answers only: the fragment shows the form's errors itself
        return render(request, "researcher/_export_preview.html", context)
    return render(request, "researcher/export.html", context, status=200 if form.is_valid() else 400)


@role_required(RESEARCHER)
def export_download(request, pk: int):
    """The file itself, streamed (JSONL line by line, Parquet row group by row group); an empty selection is the page
    with a message (404), not an empty file."""
    project = project_or_404(pk)
    form = _export_form(request)
    if not form.is_valid():
        return render(request, "researcher/export.html", _export_context(project, form), status=400)
    fmt, file_type = form.cleaned_data["format"], form.cleaned_data["file"]
    filters = export_filters([project.pk], form.cleaned_data)
    if export_count(fmt, filters) == 0:
        return render(request, "researcher/export.html", {**_export_context(project, form), "empty": True}, status=404)
    return export_response(project.name, fmt, file_type, filters)


@role_required(RESEARCHER)
def export_features(request, pk: int):
    """The `datasets.Features` of this selection's JSONL export, as a `.features.json` download."""
    project = project_or_404(pk)
    form = _export_form(request)
    if not form.is_valid():
        return render(request, "researcher/export.html", _export_context(project, form), status=400)
    fmt = form.cleaned_data["format"]
    features = export_features_of(fmt, export_filters([project.pk], form.cleaned_data))
    response = JsonResponse(features, json_dumps_params={"indent": 1})
    name = export_file_name(project.name, fmt, "jsonl", timezone.now()).removesuffix(".jsonl") + ".features.json"
    response["Content-Disposition"] = attachment_header(name)
    return response


def export_response(project_name: str, fmt: str, file_type: str, filters) -> StreamingHttpResponse:
    """The streamed download of an export (the page and the API answer with it)."""
    name = export_file_name(project_name, fmt, file_type, timezone.now())
    if file_type == "parquet":
        response = StreamingHttpResponse(
            export_parquet_chunks(fmt, filters), content_type="application/vnd.apache.parquet"
        )
    else:
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
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._") or "export" + os.path.splitext(name)[1]
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
