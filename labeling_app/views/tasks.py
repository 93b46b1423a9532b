"""Researcher pages: the task browser (filters, keyset pages) and its bulk archive / restore."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from labeling_app.forms import TaskFilterForm
from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.projects import project_or_404
from labeling_app.selectors.tasks import task_filter_choices, task_page, tasks_by_ids, tasks_count, tasks_matching
from labeling_app.services.task_archive import tasks_archive, tasks_restore

FILTER_FIELDS = tuple(TaskFilterForm.base_fields)
BULK_ACTIONS = {"archive": "archived", "restore": "restored", "archive_all": "archived", "restore_all": "restored"}


def _filter_pairs(source) -> list[tuple[str, str]]:
    """The filters of a request (GET, or the bulk form's hidden fields), empty ones left out."""
    return [(name, source.get(name)) for name in FILTER_FIELDS if source.get(name)]


def _filter_query(source) -> str:
    return urlencode(_filter_pairs(source))


def _described(form: TaskFilterForm, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(label, value as the form shows it) for each filter given: what a confirmation page lists."""
    out = []
    for name, value in pairs:
        field = form.fields[name]
        shown = dict((str(k), v) for k, v in getattr(field, "choices", ())).get(value, value)
        out.append((field.label or name.replace("_", " ").capitalize(), shown))
    return out


def _cursor(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _review_url(project_id: int, task) -> str:
    """The task's review page (issue 12's `task_review`), or its prompt's page while that page does not exist."""
    try:
        return reverse("researcher:task_review", args=[project_id, task.pk])
    except NoReverseMatch:
        return reverse("researcher:prompt_detail", args=[project_id, task.prompt_id])


@role_required(RESEARCHER)
def task_list(request, pk: int):
    project = project_or_404(pk)
    form = TaskFilterForm(request.GET, choices=task_filter_choices(project))
    context = {
        "project": project,
        "form": form,
        "query": _filter_query(request.GET),
        "hidden": _filter_pairs(request.GET),
        "page": None,
    }
    if not form.is_valid():
        return render(request, "researcher/task_list.html", context, status=400)
    page = task_page(
        project, form.filters(), after=_cursor(request.GET.get("after")), before=_cursor(request.GET.get("before"))
    )
    for task in page.rows:
        task.review_url = _review_url(project.pk, task)
    context.update(page=page, filtered=not form.filters().is_empty())
    return render(request, "researcher/task_list.html", context)


@require_POST
@role_required(RESEARCHER)
def task_bulk(request, pk: int):
    """Archive or restore the ticked tasks, or (after a confirmation page showing the count) all that match the filters."""
    project = project_or_404(pk)
    back = reverse("researcher:task_list", args=[project.pk]) + "?" + _filter_query(request.POST)
    action = request.POST.get("action", "")
    if action not in BULK_ACTIONS:
        return HttpResponseBadRequest(f"Unknown action {action!r}: send one of {', '.join(BULK_ACTIONS)}.")
    service = tasks_archive if action.startswith("archive") else tasks_restore
    if action in ("archive", "restore"):
        raw = request.POST.getlist("task")
        if any(not value.isdigit() for value in raw):
            return HttpResponseBadRequest("Task ids must be whole numbers: tick tasks in the list and try again.")
        if not raw:
            messages.error(request, f"Tick the tasks to {action} first, or use “{action} all matching”.")
            return redirect(back)
        done = service(project=project, tasks=tasks_by_ids(project, [int(value) for value in raw]))
    else:
        form = TaskFilterForm(request.POST, choices=task_filter_choices(project))
        if not form.is_valid():
            return HttpResponseBadRequest("The filters are not valid any more; open the task list again and fix them.")
        matching = tasks_matching(project, form.filters())
        if request.POST.get("confirmed") != "yes":
            return render(
                request,
                "researcher/task_bulk_confirm.html",
                {
                    "project": project,
                    "action": action,
                    "verb": action.split("_")[0],
                    "count": tasks_count(project, form.filters()),
                    "hidden": _filter_pairs(request.POST),
                    "described": _described(form, _filter_pairs(request.POST)),
                    "back": back,
                    "form": form,
                },
            )
        done = service(project=project, tasks=matching)
    word = BULK_ACTIONS[action]
    messages.success(
        request,
        f"{done} task{'s' if done != 1 else ''} {word}."
        if done
        else f"Nothing to do: none of those tasks could be {word} (already {word}).",
    )
    return redirect(back)
