"""Walks every URL of the app as anonymous, labeler, researcher and admin and checks the status code.

Every named URL must have a row here: a new page without one fails `test_every_url_is_in_the_matrix`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.conftest import make_user

ROLES = ("anon", "labeler", "researcher", "admin")


@dataclass
class Row:
    expect: dict[str, int]
    kwargs: Callable[["World"], dict] = lambda w: {}
    method: str = "get"
    data: dict = field(default_factory=dict)
    url_name: str = ""  # when one URL needs two rows (GET and POST), the key differs from the URL name
    settings: dict = field(default_factory=dict)  # Django settings the row's requests run under


def page(labeler: int, researcher: int, admin: int, anon: int = 302) -> dict[str, int]:
    return {"anon": anon, "labeler": labeler, "researcher": researcher, "admin": admin}


LABELER_ONLY = page(200, 403, 403)
RESEARCHER_UP = page(403, 200, 200)
ADMIN_ONLY = page(403, 403, 200)
API_ANY_USER = page(200, 200, 200, anon=401)


def _preset(w) -> int:
    from rlhf_worker.models import JobPreset

    return JobPreset.objects.get_or_create(kind="score", name="matrix preset to delete")[0].pk


# url name -> expected status per role. Areas add their rows below.
MATRIX: dict[str, Row] = {
    "landing": Row(page(302, 302, 302)),
    "login": Row({"anon": 200, "labeler": 302, "researcher": 302, "admin": 302}),
    "logout": Row(page(302, 302, 302), method="post"),
    "labeler:home": Row(LABELER_ONLY),
    "researcher:project_list": Row(RESEARCHER_UP),
    "jobs:list": Row(RESEARCHER_UP),
    "api:schema": Row(API_ANY_USER),
    "api:docs": Row(API_ANY_USER),
    # Training dashboard: researchers may look, only admins start / cancel / re-run / promote.
    "jobs:start": Row(ADMIN_ONLY, kwargs=lambda w: {"kind": "reward"}),
    # An empty POST is never a valid config (numbers are required), so admins get the form back with errors (400).
    "jobs:start (post)": Row(
        page(403, 403, 400), kwargs=lambda w: {"kind": "reward"}, method="post", url_name="jobs:start"
    ),
    # Presets and the ended-jobs notice (issue 12): admins only; each saves and goes back (302).
    "jobs:preset_save": Row(
        page(403, 403, 302),
        kwargs=lambda w: {"kind": "score"},
        method="post",
        data={"batch_size": "32", "device": "auto", "prior_precision": "1.0", "preset_name": "matrix preset"},
    ),
    "jobs:preset_delete": Row(page(403, 403, 302), kwargs=lambda w: {"pk": _preset(w)}, method="post"),
    # The jobs API: an empty body names what is missing (400) once past authorization.
    "api:jobs-start": Row({"anon": 401, "labeler": 403, "researcher": 403, "admin": 400}, method="post"),
    "jobs:notices_dismiss": Row(page(403, 403, 302), method="post", data={"until": "2026-01-01T00:00:00+00:00"}),
    "jobs:detail": Row(RESEARCHER_UP, kwargs=lambda w: {"pk": w.job.pk}),
    "jobs:live": Row(RESEARCHER_UP, kwargs=lambda w: {"pk": w.job.pk}),
    "jobs:series": Row(RESEARCHER_UP, kwargs=lambda w: {"pk": w.job.pk}),
    "jobs:cancel": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.job.pk}, method="post"),
    "jobs:rerun": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.job.pk}, method="post"),
    # Resume (issue 13): admins only; a job with no checkpoint is refused with a message on its page (302).
    "jobs:resume": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.job.pk}, method="post"),
    "jobs:models": Row(RESEARCHER_UP),
    "jobs:model_detail": Row(RESEARCHER_UP, kwargs=lambda w: {"pk": w.version.pk}),
    "jobs:promote": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.version.pk}, method="post"),
    "jobs:workers": Row(RESEARCHER_UP),
    # Autopilot (issue 14): researchers may look, only admins set it up, pause, resume or start a cycle. An empty
    # settings form is refused with what to fill in (400); pause / resume / run go back to the page (302).
    "jobs:autopilot": Row(RESEARCHER_UP),
    "jobs:autopilot_project": Row(RESEARCHER_UP, kwargs=lambda w: {"pk": w.project.pk}),
    "jobs:autopilot_project (post)": Row(
        page(403, 403, 400), kwargs=lambda w: {"pk": w.project.pk}, method="post", url_name="jobs:autopilot_project"
    ),
    "jobs:autopilot_pause": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.project.pk}, method="post"),
    "jobs:autopilot_resume": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.project.pk}, method="post"),
    "jobs:autopilot_run": Row(page(403, 403, 302), kwargs=lambda w: {"pk": w.project.pk}, method="post"),
    # Health endpoints (config/health.py): no login, the same answer for everyone. Readiness names a
    # training queue no worker consumes, so it is 503 whether or not a test worker runs in this session.
    "healthz": Row(page(200, 200, 200, anon=200)),
    "readyz": Row(page(503, 503, 503, anon=503), settings={"TRAINING_QUEUE": "matrix-queue-without-worker"}),
    # Prometheus metrics (config/metrics.py): admins, or a bearer METRICS_TOKEN (tests/config/test_metrics.py).
    "metrics": Row({"anon": 401, "labeler": 403, "researcher": 403, "admin": 200}),
}


# --- Researcher area: projects, prompts, demonstrations, import, export, label quality ---
def _demo_kwargs(w) -> dict:
    from labeling_app.models import Demonstration

    demo, _ = Demonstration.objects.get_or_create(prompt_id=w.task.prompt_id, defaults={"text": "An ideal answer."})
    return {"pk": w.project.pk, "prompt_id": w.task.prompt_id, "demo_id": demo.pk}


def _import_job_kwargs(w) -> dict:
    from labeling_app.models import ImportJob

    job, _ = ImportJob.objects.get_or_create(
        project=w.project, kind="prompts", defaults={"file_path": "/nonexistent.jsonl", "status": "failed"}
    )
    return {"pk": w.project.pk, "job_id": job.pk}


_PROJECT = lambda w: {"pk": w.project.pk}  # noqa: E731


def _labeled_project(w) -> dict:
    """The world's project with one submitted label, so an export has a row (an empty one answers 404)."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from labeling_app.models import Annotation, Rating

    user, _ = User.objects.get_or_create(username="matrix-export-labeler")
    annotation, created = Annotation.objects.get_or_create(
        task=w.task, labeler=user, defaults={"status": "submitted", "submitted_at": timezone.now()}
    )
    if created:
        for position, tc in enumerate(w.task.task_completions.order_by("position")):
            Rating.objects.create(annotation=annotation, completion_id=tc.completion_id, rank=position + 1)
    return {"pk": w.project.pk}


_PROMPT = lambda w: {"pk": w.project.pk, "prompt_id": w.task.prompt_id}  # noqa: E731
MATRIX.update(
    {
        "researcher:project_new": Row(RESEARCHER_UP),
        "researcher:project_detail": Row(RESEARCHER_UP, _PROJECT),
        "researcher:project_edit": Row(RESEARCHER_UP, _PROJECT),
        "researcher:prompt_list": Row(RESEARCHER_UP, _PROJECT),
        "researcher:prompt_new": Row(RESEARCHER_UP, _PROJECT),
        "researcher:prompt_detail": Row(RESEARCHER_UP, _PROMPT),
        "researcher:task_new": Row(
            page(403, 302, 302), _PROMPT, method="post"
        ),  # no completions picked: back with a message
        "researcher:demonstration_edit": Row(RESEARCHER_UP, _demo_kwargs),
        "researcher:import_upload": Row(RESEARCHER_UP, _PROJECT),
        "researcher:import_job": Row(RESEARCHER_UP, _import_job_kwargs),
        # POST only; the matrix's job failed, so the undo is refused with a message and the page comes back (302).
        "researcher:import_undo": Row(page(403, 302, 302), _import_job_kwargs, method="post"),
        "researcher:import_undo (get)": Row(
            page(405, 405, 405, anon=405), _import_job_kwargs, url_name="researcher:import_undo"
        ),
        "researcher:export": Row(RESEARCHER_UP, _PROJECT),
        "researcher:export_download": Row(RESEARCHER_UP, _labeled_project),
        "researcher:export_features": Row(RESEARCHER_UP, _PROJECT),
        "api:export": Row(
            {"anon": 401, "labeler": 403, "researcher": 200, "admin": 200},
            lambda w: {"project_id": _labeled_project(w)["pk"]},
        ),
        "api:export-preview": Row(
            {"anon": 401, "labeler": 403, "researcher": 200, "admin": 200}, lambda w: {"project_id": w.project.pk}
        ),
        "researcher:quality": Row(RESEARCHER_UP, _PROJECT),
        # POST only: recomputes the quality figures, then back to the page (302).
        "researcher:quality_refresh": Row(page(403, 302, 302), _PROJECT, method="post"),
        "researcher:quality_refresh (get)": Row(
            page(405, 405, 405, anon=405), _PROJECT, url_name="researcher:quality_refresh"
        ),
        "researcher:labeler_quality": Row(
            RESEARCHER_UP, lambda w: {"pk": w.project.pk, "user_id": w.project.created_by_id}
        ),
    }
)


# --- Labeler queue, task page and labeling API ---------------------------------------------
API_LABELER_ONLY = {"anon": 401, "labeler": 200, "researcher": 403, "admin": 403}


def _leased(w) -> dict:
    """The world's project hands a task to the matrix labeler; URLs point at that task."""
    from django.contrib.auth.models import User

    from labeling_app.services.leases import task_assign_next

    return {"task_id": task_assign_next(project=w.project, labeler=User.objects.get(username="matrix-labeler")).task_id}


def _own_annotation(w) -> dict:
    from labeling_app.models import Annotation

    task_id = _leased(w)["task_id"]
    return {"annotation_id": Annotation.objects.get(task_id=task_id, labeler__username="matrix-labeler").pk}


MATRIX.update(
    {
        "labeler:next": Row(page(302, 403, 403), kwargs=lambda w: {"project_id": w.project.pk}, method="post"),
        "labeler:task": Row(LABELER_ONLY, kwargs=_leased),
        "api:label-next": Row(API_LABELER_ONLY, kwargs=lambda w: {"project_id": w.project.pk}, method="post"),
        "api:label-task": Row(API_LABELER_ONLY, kwargs=_leased),
        "api:label-draft": Row(API_LABELER_ONLY, kwargs=_leased),
        # Empty bodies: the labeler gets past authorization and is told what is missing.
        "api:label-submit": Row({**API_LABELER_ONLY, "labeler": 400}, kwargs=_leased, method="post"),
        "api:label-skip": Row({**API_LABELER_ONLY, "labeler": 400}, kwargs=_leased, method="post"),
        "api:label-renew": Row(API_LABELER_ONLY, kwargs=_leased, method="post"),
        "api:label-annotation": Row(API_LABELER_ONLY, kwargs=_own_annotation),
    }
)


# --- Review (issue 12): researchers review a task's labels, labelers read and revise their own --------------
def _submitted(w) -> dict:
    """The matrix labeler submits a task of the world's project; URLs point at that task."""
    from django.contrib.auth.models import User

    from labeling_app.services.annotations import annotation_submit
    from tests.labeling_app.labeling_helpers import valid_ratings

    user = User.objects.get(username="matrix-labeler")
    task = task_assign_next_for(w, user)
    annotation_submit(task=task, labeler=user, ratings=valid_ratings(task, user))
    return {"task_id": task.pk}


def task_assign_next_for(w, user):
    from labeling_app.services.leases import task_assign_next

    return task_assign_next(project=w.project, labeler=user).task


def _reviewed_label(w) -> dict:
    from labeling_app.models import Annotation

    _labeled_project(w)
    annotation = Annotation.objects.get(task=w.task, labeler__username="matrix-export-labeler")
    return {"pk": w.project.pk, "task_id": w.task.pk, "annotation_id": annotation.pk}


MATRIX.update(
    {
        "researcher:task_review": Row(RESEARCHER_UP, lambda w: {"pk": w.project.pk, "task_id": w.task.pk}),
        # POST only; no decision given: refused with a message, back to the task's page (302).
        "researcher:annotation_review": Row(page(403, 302, 302), _reviewed_label, method="post"),
        "labeler:my_labels": Row(LABELER_ONLY),
        "labeler:my_label": Row(LABELER_ONLY, kwargs=_submitted),
        "labeler:label_revise": Row(LABELER_ONLY, kwargs=_submitted),
        # An empty body: past authorization, the labeler is told what is missing.
        "api:label-revise": Row({**API_LABELER_ONLY, "labeler": 400}, kwargs=_submitted, method="post"),
    }
)


# --- People, teams and tokens (issue 12) --------------------------------------------------------
_PERSON = lambda w: {"user_id": w.project.created_by_id}  # noqa: E731  (a researcher, not a matrix user)
ANY_USER = page(200, 200, 200)
MATRIX.update(
    {
        # An invalid or used link answers the "no longer works" page to anyone, logged in or not.
        "set_password": Row(page(200, 200, 200, anon=200), kwargs=lambda w: {"uidb64": "MQ", "token": "not-a-token"}),
        "profile": Row(ANY_USER),
        "profile_token_create": Row(ANY_USER, method="post"),  # the new key is shown on the answer
        "profile_token_revoke": Row(page(302, 302, 302), method="post"),
        "people:list": Row(ADMIN_ONLY),
        "people:create": Row(page(403, 403, 400), method="post"),  # empty form: back with what to fill in
        "people:invite": Row(ADMIN_ONLY, kwargs=_PERSON, method="post"),
        "people:roles": Row(page(403, 403, 302), kwargs=_PERSON, method="post"),  # no role ticked: a message
        "people:active": Row(page(403, 403, 302), kwargs=_PERSON, method="post", data={"active": "1"}),
        "researcher:project_team": Row(page(403, 302, 302), kwargs=_PROJECT, method="post", data={"access": "all"}),
    }
)


# --- Task browser: filters, bulk archive and restore (issue 12) --------------------------------
MATRIX.update(
    {
        "researcher:task_list": Row(RESEARCHER_UP, _PROJECT),
        "researcher:task_list (bad filter)": Row(
            page(403, 400, 400), _PROJECT, data={"labels": "many"}, url_name="researcher:task_list"
        ),
        # Restoring a task that is not archived changes nothing; the list comes back with a message (302).
        "researcher:task_bulk": Row(
            page(403, 302, 302), lambda w: {"pk": w.project.pk}, method="post", data={"action": "restore", "task": "1"}
        ),
        # "… all matching" first answers the confirmation page with the count (200).
        "researcher:task_bulk (confirm)": Row(
            page(403, 200, 200),
            _PROJECT,
            method="post",
            data={"action": "restore_all"},
            url_name="researcher:task_bulk",
        ),
        "researcher:task_bulk (get)": Row(page(405, 405, 405, anon=405), _PROJECT, url_name="researcher:task_bulk"),
    }
)


@dataclass
class World:
    """Objects the parametrised URLs point at."""

    project: object
    task: object
    job: object = None
    version: object = None


def url_names(resolver=None, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":  # Django's own admin site: staff-only by Django
                continue
            ns = f"{prefix}{entry.namespace}:" if entry.namespace else prefix
            names |= url_names(entry, ns)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(prefix + entry.name)
    return names


def test_every_url_is_in_the_matrix():
    missing = url_names() - {row.url_name or name for name, row in MATRIX.items()}
    stale = {row.url_name or name for name, row in MATRIX.items()} - url_names()
    assert not missing, f"add rows to MATRIX for: {sorted(missing)}"
    assert not stale, f"MATRIX names URLs that no longer exist: {sorted(stale)}"


@pytest.fixture
def world(demo_project):
    from rlhf_worker.models import ModelVersion, TrainingJob

    job = TrainingJob.objects.create(kind="reward", status="succeeded", config={})
    version = ModelVersion.objects.create(kind="policy", name="matrix-policy", path="/nonexistent", training_job=job)
    return World(project=demo_project, task=demo_project.tasks.first(), job=job, version=version)


@pytest.fixture
def clients(client, django_user_model, db):
    from django.test import Client

    by_role = {"anon": Client()}
    for role in ("labeler", "researcher", "admin"):
        c = Client()
        c.force_login(make_user(f"matrix-{role}", role))
        by_role[role] = c
    return by_role


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_role_matrix(name, world, clients, settings):
    row = MATRIX[name]
    for setting, value in row.settings.items():
        setattr(settings, setting, value)
    url = reverse(row.url_name or name, kwargs=row.kwargs(world))
    got = {}
    for role in ROLES:
        response = getattr(clients[role], row.method)(url, row.data)
        got[role] = response.status_code
    assert got == row.expect, f"{name} ({url})"
