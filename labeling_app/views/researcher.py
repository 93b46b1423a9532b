"""Researcher pages: projects (create, edit, detail with counts), prompts and demonstrations."""
from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from labeling_app.models import Annotation, Completion, Demonstration, Project, Prompt
from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.quality import project_progress
from labeling_app.selectors.scores import prompt_completion_summaries
from labeling_app.services.authoring import (
    AuthoringError,
    check_add,
    check_update,
    demonstration_save,
    project_update,
    prompt_create,
    task_create_from,
)
from labeling_app.services.projects import project_create


@role_required(RESEARCHER)
def project_list(request):
    projects = Project.objects.annotate(n_prompts=Count("prompts", distinct=True), n_tasks=Count("tasks", distinct=True))
    return render(request, "researcher/project_list.html", {"projects": projects})


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 12, "class": "mono"}),
                                   help_text="Markdown. Shown to labelers above every task.")
    completions_per_task = forms.IntegerField(min_value=2, max_value=9, initial=4, label="K (completions per task)",
                                              help_text="2 to 9. Fixed once the project has tasks.")
    overlap = forms.IntegerField(min_value=1, max_value=20, initial=1, help_text="Labels wanted per task.")
    lease_minutes = forms.IntegerField(min_value=1, max_value=24 * 60, initial=30, label="Lease (minutes)",
                                       help_text="How long a labeler holds a task before it returns to the pool.")


def _settings(form: ProjectForm) -> dict:
    return {k: form.cleaned_data[k] for k in ("name", "instructions", "completions_per_task", "overlap", "lease_minutes")}


@role_required(RESEARCHER)
def project_new(request):
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = project_create(user=request.user, **_settings(form))
        except IntegrityError:
            form.add_error("name", "A project with this name already exists.")
        else:
            messages.success(request, f"Project {project.name} created with the default yes/no checks; edit them below.")
            return redirect("researcher:project_edit", pk=project.pk)
    return render(request, "researcher/project_form.html", {"form": form, "project": None})


@role_required(RESEARCHER)
def project_edit(request, pk: int):
    project = get_object_or_404(Project, pk=pk)
    form = ProjectForm(request.POST or None, initial={k: getattr(project, k) for k in ProjectForm.base_fields})
    check_errors: dict[str, str] = {}
    if request.method == "POST" and form.is_valid():
        try:
            project_update(project=project, **_settings(form))
            for check in project.checks.all():
                check_update(check=check, question=request.POST.get(f"check-{check.pk}-question", check.question),
                             active=request.POST.get(f"check-{check.pk}-active") == "on")
            for question in request.POST.getlist("new_question"):
                if question.strip():
                    check_add(project=project, question=question)
        except AuthoringError as exc:
            if exc.field in form.fields:
                form.add_error(exc.field, str(exc))
            else:
                check_errors[exc.field] = str(exc)
        else:
            messages.success(request, "Project saved.")
            return redirect("researcher:project_detail", pk=project.pk)
    return render(request, "researcher/project_form.html", {
        "form": form, "project": project, "checks": project.checks.all(), "check_errors": check_errors,
        "has_tasks": project.tasks.exists(),
    })


@role_required(RESEARCHER)
def project_detail(request, pk: int):
    project = get_object_or_404(Project, pk=pk)
    counts = {
        "prompts": project.prompts.count(),
        "chat_prompts": project.prompts.filter(messages__isnull=False).count(),
        "demonstrations": Demonstration.objects.filter(prompt__project=project).count(),
        "completions": Completion.objects.filter(prompt__project=project).count(),
        **Annotation.objects.filter(task__project=project, status=Annotation.Status.SUBMITTED).aggregate(
            human_labels=Count("id", filter=Q(labeler__isnull=False)), imported_labels=Count("id", filter=Q(labeler__isnull=True))),
    }
    return render(request, "researcher/project_detail.html", {
        "project": project, "counts": counts, "progress": project_progress(project),
        "checks": project.checks.all(), "imports": project.import_jobs.all()[:5],
    })


@role_required(RESEARCHER)
def prompt_list(request, pk: int):
    project = get_object_or_404(Project, pk=pk)
    q = request.GET.get("q", "").strip()
    prompts = project.prompts.annotate(n_demos=Count("demonstrations", distinct=True), n_tasks=Count("tasks", distinct=True),
                                       n_completions=Count("completions", distinct=True)).order_by("-id")
    if q:
        prompts = prompts.filter(text__icontains=q)
    page = Paginator(prompts, 50).get_page(request.GET.get("page"))
    return render(request, "researcher/prompt_list.html", {"project": project, "page": page, "q": q})


@role_required(RESEARCHER)
def prompt_new(request, pk: int):
    project = get_object_or_404(Project, pk=pk)
    error, values = None, {"mode": "plain", "text": "", "messages": ""}
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in values}
        try:
            prompt = prompt_create(project=project, user=request.user, text=values["text"],
                                   messages=values["messages"] if values["mode"] == "chat" else None)
        except AuthoringError as exc:
            error = exc
        else:
            messages.success(request, f"Prompt #{prompt.pk} saved. Write its demonstration below, or add another prompt.")
            if request.POST.get("then") == "another":
                return redirect("researcher:prompt_new", pk=project.pk)
            return redirect("researcher:prompt_detail", pk=project.pk, prompt_id=prompt.pk)
    return render(request, "researcher/prompt_form.html", {"project": project, "error": error, "values": values})


@role_required(RESEARCHER)
def prompt_detail(request, pk: int, prompt_id: int):
    project = get_object_or_404(Project, pk=pk)
    prompt = get_object_or_404(Prompt, pk=prompt_id, project=project)
    error = None
    if request.method == "POST":
        try:
            demonstration_save(prompt=prompt, text=request.POST.get("text", ""), user=request.user,
                               as_completion=request.POST.get("as_completion") == "on")
        except AuthoringError as exc:
            error = exc
        else:
            messages.success(request, "Demonstration saved.")
            return redirect("researcher:prompt_detail", pk=project.pk, prompt_id=prompt.pk)
    completions = list(prompt.completions.annotate(n_tasks=Count("tasks")).order_by("id"))
    summaries = prompt_completion_summaries(prompt)
    for c in completions:
        c.summary = summaries[c.pk]
    return render(request, "researcher/prompt_detail.html", {
        "project": project, "prompt": prompt, "error": error,
        "demonstrations": prompt.demonstrations.select_related("author"),
        "completions": completions, "any_unscored": any(not c.summary.scores for c in completions),
        "tasks": prompt.tasks.order_by("id"),
    })


@role_required(RESEARCHER)
def demonstration_edit(request, pk: int, prompt_id: int, demo_id: int):
    project = get_object_or_404(Project, pk=pk)
    demo = get_object_or_404(Demonstration, pk=demo_id, prompt_id=prompt_id, prompt__project=project)
    error = None
    if request.method == "POST":
        try:
            demonstration_save(prompt=demo.prompt, text=request.POST.get("text", ""), user=request.user, demonstration=demo,
                               as_completion=request.POST.get("as_completion") == "on")
        except AuthoringError as exc:
            error = exc
        else:
            messages.success(request, "Demonstration saved.")
            return redirect("researcher:prompt_detail", pk=project.pk, prompt_id=demo.prompt_id)
    return render(request, "researcher/demonstration_form.html", {
        "project": project, "prompt": demo.prompt, "demo": demo, "error": error,
        "is_completion": demo.completions.exists(),
    })


@require_POST
@role_required(RESEARCHER)
def task_new(request, pk: int, prompt_id: int):
    prompt = get_object_or_404(Prompt, pk=prompt_id, project_id=pk)
    try:
        ids = [int(i) for i in request.POST.getlist("completion")]
        task = task_create_from(prompt=prompt, completion_ids=ids, shuffle_seed=None)
    except (AuthoringError, ValueError) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Task #{task.pk} created; labelers will see it in the queue.")
    return redirect("researcher:prompt_detail", pk=pk, prompt_id=prompt.pk)

