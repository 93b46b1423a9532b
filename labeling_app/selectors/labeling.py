"""Reads for the labeler's pages and API, with the labeler's authorization built in."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import BooleanField, Count, F
from django.db.models.expressions import RawSQL
from django.http import Http404
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckQuestion, Completion, Project, Prompt, RankingTask
from labeling_app.roles import LABELER, has_role
from labeling_app.selectors.projects import count_of


# --- Reads every labeling request makes, in plain SQL ------------------------------------------
# Compiling an ORM query costs more CPU (about a millisecond on a small server) than PostgreSQL takes
# to answer these index lookups, so the hot reads are SQL over the models' own column lists.


def sql_columns(model, alias: str) -> str:
    """`alias."column", …` for every concrete field of `model`, in field order (what models_from_row reads)."""
    return ", ".join(f'{alias}."{f.column}"' for f in model._meta.concrete_fields)


@functools.cache
def _decoders(model) -> dict[str, list]:
    return {f.attname: f.get_db_converters(connection) for f in model._meta.concrete_fields}


def model_from_row(model, values: dict[str, Any]):
    """A model instance from column values by attname, decoded as the ORM decodes them (JSON fields);
    fields not given stay deferred (they load on first use)."""
    decoders = _decoders(model)
    decoded = []
    for attname, value in values.items():
        for decode in decoders[attname]:
            value = decode(value, None, connection)
        decoded.append(value)
    return model.from_db(DEFAULT_DB_ALIAS, list(values), decoded)


def models_from_row(row, *models) -> list:
    """Instances from a row that holds sql_columns(model) for each of `models`, one after the other."""
    out, start = [], 0
    for model in models:
        attnames = [f.attname for f in model._meta.concrete_fields]
        out.append(model_from_row(model, dict(zip(attnames, row[start : start + len(attnames)]))))
        start += len(attnames)
    return out


def _require_labeler(user) -> None:
    if not has_role(user, LABELER):
        raise PermissionDenied("Only labelers label tasks.")


def open_to_labeler(user, project_id_sql: str = f"{Project._meta.db_table}.id") -> RawSQL:
    """A filter: the project (whose id is the SQL `project_id_sql`) is open to this labeler.

    The rule is the SQL function labeling_project_open_to (migration 0009_teams), which the hand-out
    function calls too: a project not team-only, or one whose team lists the user.
    """
    return RawSQL(f"labeling_project_open_to({project_id_sql}, %s)", [user.pk], output_field=BooleanField())


def task_for_labeler(user, task_id: int) -> RankingTask:
    """The task, if this labeler was given it (has an annotation on it); 404 otherwise.

    Someone else's task answers 404, not 403, so labelers cannot probe which tasks exist; so does a
    task of a team-only project whose team does not list the labeler (any more). The
    labeler's annotation, read in the same query, comes along as `task.labeler_annotation`
    (services that take the task use it instead of reading it again).
    """
    annotation = annotation_for_labeler(user, task_id)
    task = annotation.task
    task.labeler_annotation = annotation
    return task


@functools.cache
def _annotation_for_labeler_sql() -> str:
    return f"""
        SELECT {sql_columns(Annotation, "a")}, {sql_columns(RankingTask, "t")},
               {sql_columns(Project, "p")}, {sql_columns(Prompt, "pr")}
        FROM {Annotation._meta.db_table} a
        JOIN {RankingTask._meta.db_table} t ON t.id = a.task_id
        JOIN {Project._meta.db_table} p ON p.id = t.project_id
        JOIN {Prompt._meta.db_table} pr ON pr.id = t.prompt_id
        WHERE a.task_id = %s AND a.labeler_id = %s AND labeling_project_open_to(t.project_id, a.labeler_id)"""


def annotation_for_labeler(user, task_id: int) -> Annotation:
    """The labeler's own annotation of a task (404 if they have none), with its task, project and prompt."""
    _require_labeler(user)
    with connection.cursor() as cur:
        cur.execute(_annotation_for_labeler_sql(), [task_id, user.pk])
        row = cur.fetchone()
    if row is None:
        raise Http404("No such task in your queue.")
    annotation, task, project, prompt = models_from_row(row, Annotation, RankingTask, Project, Prompt)
    task.project, task.prompt, annotation.task = project, prompt, task
    return annotation


def annotation_by_id_for_labeler(user, annotation_id: int) -> Annotation:
    """An annotation by id, only if it is the labeler's own (404 for everyone else's)."""
    _require_labeler(user)
    annotation = (
        Annotation.objects.select_related("task")
        .filter(pk=annotation_id, labeler=user)
        .filter(open_to_labeler(user, f"{RankingTask._meta.db_table}.project_id"))
        .first()
    )
    if annotation is None:
        raise Http404("No such annotation among yours.")
    return annotation


def project_ref_for_labeler(user, project_id: int) -> Project:
    """The project by id for a labeler, not read from the database: its fields load on first use.

    For callers that pass it to a service which reads the project anyway (task_assign_next raises
    Project.DoesNotExist for a project that is not there, or not open to the labeler: its team).
    """
    _require_labeler(user)
    return Project.from_db(DEFAULT_DB_ALIAS, ["id"], [project_id])


def project_for_labeler(user, project_id: int) -> Project:
    _require_labeler(user)
    project = Project.objects.filter(pk=project_id).filter(open_to_labeler(user)).first()
    if project is None:
        raise Http404("No such project.")
    return project


def start_of_today() -> datetime:
    now = timezone.localtime()
    return timezone.make_aware(datetime.combine(now.date(), time.min), now.tzinfo)


def labeler_today_count(user, project: Project | None = None) -> int:
    """Tasks this labeler submitted since local midnight (in this project, if given)."""
    qs = Annotation.objects.filter(labeler=user, status=Annotation.Status.SUBMITTED, submitted_at__gte=start_of_today())
    if project is not None:
        qs = qs.filter(task__project=project)
    return qs.count()


def labeler_projects(user) -> list[Project]:
    """The projects open to this labeler, with `open_tasks` and their `today_count` (submitted today) attached."""
    projects = list(
        # A count per project through the partial index of open tasks, not a join of every task of every project.
        Project.objects.filter(open_to_labeler(user))
        .annotate(
            open_tasks=count_of(RankingTask.objects.filter(submitted_count__lt=F("overlap"), archived_at__isnull=True))
        )
        .order_by("name")
    )
    today = dict(
        Annotation.objects.filter(labeler=user, status=Annotation.Status.SUBMITTED, submitted_at__gte=start_of_today())
        .values("task__project")
        .annotate(n=Count("id"))
        .values_list("task__project", "n")
    )
    for project in projects:
        project.today_count = today.get(project.pk, 0)
    return projects


@dataclass(frozen=True)
class ShownCompletion:
    id: int
    label: str  # "Response A": its place in the order this labeler sees
    letter: str
    text: str
    cut_at_length_limit: bool = False


def shown_completions(ordered: list[tuple]) -> list[ShownCompletion]:
    """(completion id, text[, cut at the length limit]) tuples, already in the labeler's shown order, named
    "Response A", "Response B", …"""
    return [
        ShownCompletion(
            id=row[0],
            label=f"Response {chr(65 + i)}",
            letter=chr(65 + i),
            text=row[1],
            cut_at_length_limit=bool(row[2]) if len(row) > 2 else False,
        )
        for i, row in enumerate(ordered)
    ]


def completions_in_shown_order(annotation: Annotation) -> list[ShownCompletion]:
    """The task's completions in the random order recorded on this labeler's annotation."""
    by_id = {
        cid: (text, finish_reason == "length")
        for cid, text, finish_reason in Completion.objects.filter(tasks=annotation.task_id).values_list(
            "id", "text", "sampling__finish_reason"
        )
    }
    order = [cid for cid in annotation.shown_order if cid in by_id] + sorted(set(by_id) - set(annotation.shown_order))
    return shown_completions([(cid, *by_id[cid]) for cid in order])


# SQL for the version of a project's checks, `{project}` being SQL for the project's id: any insert,
# update or delete of one of its checks changes it (an update gives the row a new xmin), whoever
# writes (a service, the admin site, a QuerySet.update). The hand-out function (migration 0008_labeling_functions) computes the same.
CHECKS_VERSION_SQL = """coalesce((SELECT string_agg(q.id::text || ':' || q.xmin::text, ',' ORDER BY q.id)
                         FROM labeling_app_checkquestion q WHERE q.project_id = {project}), '')"""

# Per process: project id -> (checks version, active checks). Every labeling request needs the checks,
# and they change rarely; a version read in a statement the request makes anyway validates the entry.
_checks_cache: dict[int, tuple[str, tuple[CheckQuestion, ...]]] = {}


def _load_checks(project_id: int) -> tuple[str, tuple[CheckQuestion, ...]]:
    rows = list(
        CheckQuestion.objects.filter(project_id=project_id)
        .annotate(row_xmin=RawSQL(f"{CheckQuestion._meta.db_table}.xmin::text", ()))
        .order_by("id")
    )
    version = ",".join(f"{c.pk}:{c.row_xmin}" for c in rows)
    entry = (version, tuple(sorted((c for c in rows if c.active), key=lambda c: (c.position, c.pk))))
    _checks_cache[project_id] = entry
    return entry


def project_checks(
    project_id: int, *, version: str | None = None, fresh: bool = False
) -> tuple[str, list[CheckQuestion]]:
    """(version, active checks) of a project, from this process's cache unless `fresh` or the cached
    version differs from `version` (a CHECKS_VERSION_SQL value the caller read). With neither, the
    cached entry may be stale: use it only where the write that depends on it verifies the version."""
    cached = None if fresh else _checks_cache.get(project_id)
    if cached is None or (version is not None and cached[0] != version):
        cached = _load_checks(project_id)
    return cached[0], list(cached[1])


def active_checks(project: Project, *, version: str | None = None) -> list[CheckQuestion]:
    """The project's active checks in their order; cached while `version` (see project_checks) matches."""
    return project_checks(project.pk, version=version, fresh=version is None)[1]


def lease_for(user, task: RankingTask) -> Assignment | None:
    return Assignment.objects.filter(task=task, labeler=user).first()
