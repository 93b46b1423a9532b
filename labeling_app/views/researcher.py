"""Researcher pages: projects (create, edit, detail with counts), prompts and demonstrations."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from config.errors import ServiceError
from labeling_app.forms import DemonstrationForm, ProjectForm, PromptForm, call_service
from labeling_app.models import QueueOrder
from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors import projects as sel
from labeling_app.selectors.imports import recent_import_jobs
from labeling_app.selectors.quality import project_progress
from labeling_app.selectors.queue import project_has_margins, queue_sources, source_label
from labeling_app.services.authoring import demonstration_save, prompt_create, task_create_from
from labeling_app.selectors.people import team_choices, team_of
from labeling_app.services.projects import NewCheck, project_create, project_set_team, project_update


@role_required(RESEARCHER)
def project_list(request):
    page = Paginator(sel.projects_with_counts(), sel.PROJECTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "researcher/project_list.html", {"projects": page, "page": page})


@role_required(RESEARCHER)
def project_new(request):
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = call_service(form, project_create, user=request.user, **form.settings())
        if project:
            messages.success(
                request, f"Project {project.name} created with the default yes/no checks; edit them below."
            )
            return redirect("researcher:project_edit", pk=project.pk)
    return render(request, "researcher/project_form.html", {"form": form, "project": None})


@role_required(RESEARCHER)
def project_edit(request, pk: int):
    project = sel.project_or_404(pk)
    initial = {k: getattr(project, k) for k in (*ProjectForm.SETTINGS, "queue_order", "queue_source")}
    # Off shows as empty, so a new overlap alone is not refused for a maximum the researcher never set.
    initial["overlap_max"] = project.overlap_max if project.adaptive_overlap else None
    form = ProjectForm(
        request.POST or None,
        checks=sel.project_checks(project),
        sources=queue_sources(project.pk, keep=project.queue_source),
        initial=initial,
    )
    if request.method == "POST" and form.is_valid():
        saved = call_service(
            form,
            project_update,
            project=project,
            **form.settings(),
            **form.queue_settings(),
            check_edits=form.check_edits(),
            new_questions=form.new_questions(),
        )
        if saved:
            messages.success(request, "Project saved.")
            if saved.queue_order == QueueOrder.UNCERTAINTY and not project_has_margins(saved.pk):
                messages.warning(request, UNSCORED_NOTE)
            return redirect("researcher:project_detail", pk=saved.pk)
    return render(
        request,
        "researcher/project_form.html",
        {
            "form": form,
            "project": project,
            "check_rows": form.check_rows(),
            "has_tasks": sel.project_has_tasks(project),
            "new_checks": form.new_questions() or [NewCheck("")],
            "has_margins": project_has_margins(project.pk),
            "unscored_note": UNSCORED_NOTE,
        },
    )


UNSCORED_NOTE = (
    "No score job has scored this project's tasks yet: until one runs, 'Reward model least sure first' "
    "hands tasks out oldest first. Start a score job for this project on the Jobs page."
)


@role_required(RESEARCHER)
def project_detail(request, pk: int):
    project = sel.project_or_404(pk)
    return render(
        request,
        "researcher/project_detail.html",
        {
            "project": project,
            "queue_source_label": source_label(project.queue_source) if project.queue_source else "",
            "counts": sel.project_counts(project),
            "progress": project_progress(project),
            "checks": sel.project_checks(project),
            "imports": recent_import_jobs(project, 5),
            "team": team_of(project),
            "team_choices": team_choices(),
        },
    )


@require_POST
@role_required(RESEARCHER)
def project_team(request, pk: int):
    """Open the project to every labeler, or only to the ticked ones."""
    project = sel.project_or_404(pk)
    team_only = request.POST.get("access") == "team"
    try:
        members = [int(m) for m in request.POST.getlist("members")]
        project_set_team(project=project, team_only=team_only, members=members)
    except ValueError:
        messages.error(request, "Team not changed: the member list was not a list of user ids.")
    except ServiceError as exc:
        messages.error(request, f"Team not changed: {exc.message}")
    else:
        messages.success(
            request,
            "Only the team may label this project now." if team_only else "Every labeler may label this project now.",
        )
    return redirect("researcher:project_detail", pk=project.pk)


@role_required(RESEARCHER)
def prompt_list(request, pk: int):
    project = sel.project_or_404(pk)
    q = request.GET.get("q", "").strip()
    page = Paginator(sel.prompts_of_project(project, search=q), sel.PROMPTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "researcher/prompt_list.html", {"project": project, "page": page, "q": q})


@role_required(RESEARCHER)
def prompt_new(request, pk: int):
    project = sel.project_or_404(pk)
    form = PromptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        prompt = call_service(
            form,
            prompt_create,
            project=project,
            user=request.user,
            text=form.cleaned_data["text"],
            messages=form.cleaned_data["messages"] if form.is_chat() else None,
        )
        if prompt:
            messages.success(
                request, f"Prompt #{prompt.pk} saved. Write its demonstration below, or add another prompt."
            )
            if request.POST.get("then") == "another":
                return redirect("researcher:prompt_new", pk=project.pk)
            return redirect("researcher:prompt_detail", pk=project.pk, prompt_id=prompt.pk)
    return render(request, "researcher/prompt_form.html", {"project": project, "form": form})


@role_required(RESEARCHER)
def prompt_detail(request, pk: int, prompt_id: int):
    prompt = sel.prompt_or_404(pk, prompt_id)
    form = DemonstrationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if call_service(form, demonstration_save, prompt=prompt, user=request.user, **form.cleaned_data):
            messages.success(request, "Demonstration saved.")
            return redirect("researcher:prompt_detail", pk=pk, prompt_id=prompt.pk)
    return render(
        request,
        "researcher/prompt_detail.html",
        {
            "project": prompt.project,
            "prompt": prompt,
            "form": form,
            **sel.prompt_overview(prompt),
        },
    )


@role_required(RESEARCHER)
def demonstration_edit(request, pk: int, prompt_id: int, demo_id: int):
    demo = sel.demonstration_or_404(pk, prompt_id, demo_id)
    form = DemonstrationForm(request.POST or None, initial={"text": demo.text})
    if request.method == "POST" and form.is_valid():
        if call_service(
            form, demonstration_save, prompt=demo.prompt, user=request.user, demonstration=demo, **form.cleaned_data
        ):
            messages.success(request, "Demonstration saved.")
            return redirect("researcher:prompt_detail", pk=pk, prompt_id=demo.prompt_id)
    return render(
        request,
        "researcher/demonstration_form.html",
        {
            "project": demo.prompt.project,
            "prompt": demo.prompt,
            "demo": demo,
            "form": form,
            "is_completion": sel.demonstration_is_completion(demo),
        },
    )


@require_POST
@role_required(RESEARCHER)
def task_new(request, pk: int, prompt_id: int):
    prompt = sel.prompt_or_404(pk, prompt_id)
    ids = [int(i) for i in request.POST.getlist("completion") if i.isdigit()]
    try:
        task = task_create_from(prompt=prompt, completion_ids=ids, shuffle_seed=None)
    except ServiceError as exc:  # no form on this page: the refusal is a notice on the prompt's page
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Task #{task.pk} created; labelers will see it in the queue.")
    return redirect("researcher:prompt_detail", pk=pk, prompt_id=prompt.pk)
