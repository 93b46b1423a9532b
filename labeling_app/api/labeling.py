"""Labeler API: next task, task detail, draft save/restore, submit, skip, lease renewal, own annotations and their
revision.

A service's ServiceError is answered by config.errors.api_exception_handler: its status with
{"detail", "errors"} (ErrorOutput below), so the views here only call the service.
"""

from __future__ import annotations

from django.conf import settings
import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.http import Http404
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from labeling_app.models import Project
from labeling_app.roles import HasRole, LABELER, remember_roles
from labeling_app.selectors import labeling as sel
from labeling_app.services.annotations import (
    annotation_revise,
    annotation_save_draft,
    annotation_skip,
    annotation_submit,
)
from labeling_app.services.leases import assignment_renew, task_assign_next
from labeling_app.validation import JsonInputError, json_loads


class ErrorOutput(serializers.Serializer):
    """What a refused request answers (config.errors.api_exception_handler writes it from a ServiceError)."""

    detail = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Field name (e.g. `ratings.12.likert`) → what to fix.",
    )


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, except that no body can make it fail with a 500.

    DRF catches ValueError only: a body nested thousands deep raises RecursionError inside
    json.load, and an integer over Python's 4,300-digit limit gets advice meant for the server.
    Both are a 400 with a plain reason here, like any other malformed JSON.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json_loads(stream.read().decode(encoding), strict=self.strict)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}: {exc.reason}") from None
        except JsonInputError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


@functools.cache
def _token_sql() -> str:
    user_model = get_user_model()
    member = user_model.groups.through._meta
    return f"""
        SELECT {sel.sql_columns(Token, "k")}, {sel.sql_columns(user_model, "u")},
               ARRAY(SELECT g.name FROM {Group._meta.db_table} g
                     JOIN {member.db_table} m ON m.{member.get_field("group").column} = g.{Group._meta.pk.column}
                     WHERE m.{member.get_field("user").column} = u.{user_model._meta.pk.column})
        FROM {Token._meta.db_table} k
        JOIN {user_model._meta.db_table} u ON u.{user_model._meta.pk.column} = k.{Token._meta.get_field("user").column}
        WHERE k.{Token._meta.pk.column} = %s"""


class TokenWithRolesAuthentication(TokenAuthentication):
    """DRF's token authentication in one query that also reads the user's roles.

    Every labeler request checks the role: read apart, and through the ORM, the token, the user and
    the roles cost two round trips and more CPU than the request's own work.
    """

    def authenticate_credentials(self, key):
        with connection.cursor() as cur:
            cur.execute(_token_sql(), [key])
            row = cur.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token, user = sel.models_from_row(row[:-1], Token, get_user_model())
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        remember_roles(user, row[-1])
        return user, token


# The two calls a labeler makes per task answer plain data shaped as their Output serializer (the
# schema): serializing through DRF's fields cost more CPU than the rest of the answer.
_datetime = serializers.DateTimeField().to_representation


class LabelerApi(APIView):
    # Token first, as in the default: unauthenticated calls get 401 with a WWW-Authenticate header.
    authentication_classes = [TokenWithRolesAuthentication, SessionAuthentication]
    permission_classes = [HasRole.of(LABELER)]
    parser_classes = [SafeJSONParser] + [
        p for p in api_settings.DEFAULT_PARSER_CLASSES if not issubclass(p, JSONParser)
    ]


# --- next task ------------------------------------------------------------------------------


class CompletionOut(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    text = serializers.CharField()


class CheckOut(serializers.Serializer):
    key = serializers.CharField()
    question = serializers.CharField()
    problem_answer = serializers.BooleanField(
        help_text="The answer that flags a problem: true (yes) for most checks, "
        "false (no) for one that asks for something good"
    )


class NextTaskOutput(serializers.Serializer):
    task_id = serializers.IntegerField(allow_null=True, help_text="null when nothing is left for you in this project")
    url = serializers.CharField(allow_null=True, help_text="The task page")
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    prompt_text = serializers.CharField(allow_null=True)
    completions = CompletionOut(many=True, help_text="In the random order shown to you (empty when no task)")
    checks = CheckOut(many=True, help_text="Answer each for every completion")


class NextTaskApi(LabelerApi):
    @extend_schema(
        request=None,
        responses=NextTaskOutput,
        summary="Lease the next task of a project (your open one first), with what is needed to label it",
    )
    def post(self, request, project_id: int):
        project = sel.project_ref_for_labeler(request.user, project_id)
        try:
            assignment = task_assign_next(project=project, labeler=request.user)
        except Project.DoesNotExist:
            raise Http404("No such project.") from None
        if assignment is None:
            return Response(
                {
                    "task_id": None,
                    "url": None,
                    "lease_expires_at": None,
                    "prompt_text": None,
                    "completions": [],
                    "checks": [],
                }
            )
        # Everything comes with the assignment (one round trip); the checks from the cache it validates.
        return Response(
            {
                "task_id": assignment.task_id,
                "url": reverse("labeler:task", args=[assignment.task_id]),
                "lease_expires_at": _datetime(assignment.expires_at),
                "prompt_text": assignment.task.prompt.text,
                "completions": [
                    {"id": c.id, "label": c.label, "text": c.text}
                    for c in sel.shown_completions(assignment.shown_completions)
                ],
                "checks": [c.for_labelers() for c in sel.active_checks(project, version=assignment.checks_version)],
            }
        )


# --- task detail ----------------------------------------------------------------------------


class TaskDetailOutput(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.IntegerField()
    prompt_text = serializers.CharField()
    prompt_messages = serializers.JSONField(allow_null=True)
    completions = CompletionOut(many=True, help_text="In the random order shown to you")
    checks = CheckOut(many=True)
    status = serializers.CharField()
    draft = serializers.JSONField()


class TaskDetailApi(LabelerApi):
    @extend_schema(responses=TaskDetailOutput, summary="A task you were given, completions in your shown order")
    def get(self, request, task_id: int):
        annotation = sel.annotation_for_labeler(request.user, task_id)
        task = annotation.task
        return Response(
            TaskDetailOutput(
                {
                    "id": task.pk,
                    "project": task.project_id,
                    "prompt_text": task.prompt.text,
                    "prompt_messages": task.prompt.messages,
                    "completions": [
                        {"id": c.id, "label": c.label, "text": c.text}
                        for c in sel.completions_in_shown_order(annotation)
                    ],
                    "checks": [c.for_labelers() for c in sel.active_checks(task.project)],
                    "status": annotation.status,
                    "draft": annotation.draft,
                }
            ).data
        )


# --- draft ----------------------------------------------------------------------------------


class DraftInput(serializers.Serializer):
    draft = serializers.JSONField(help_text="Any JSON object up to 64 kB: the page's unsaved state")


class DraftOutput(serializers.Serializer):
    draft = serializers.JSONField()
    updated_at = serializers.DateTimeField()


class DraftApi(LabelerApi):
    @extend_schema(responses=DraftOutput, summary="Restore your draft of a task")
    def get(self, request, task_id: int):
        annotation = sel.annotation_for_labeler(request.user, task_id)
        return Response(DraftOutput(annotation).data)

    @extend_schema(
        request=DraftInput, responses={200: DraftOutput, 400: ErrorOutput}, summary="Save your draft of a task"
    )
    def put(self, request, task_id: int):
        task = sel.task_for_labeler(request.user, task_id)
        data = DraftInput(data=request.data)
        data.is_valid(raise_exception=True)
        annotation = annotation_save_draft(task=task, labeler=request.user, draft=data.validated_data["draft"])
        return Response(DraftOutput(annotation).data)


# --- submit ---------------------------------------------------------------------------------


class RatingInput(serializers.Serializer):
    # Types only: ranges, completeness and the ranking are checked by the service, which words the errors.
    completion = serializers.IntegerField()
    likert = serializers.IntegerField(allow_null=True, required=False, help_text="1 (terrible) to 7 (excellent)")
    rank = serializers.IntegerField(
        allow_null=True, required=False, help_text="1 = best; ties share a rank; dense 1..m"
    )
    checks = serializers.DictField(
        child=serializers.BooleanField(allow_null=True),
        required=False,
        help_text="Every active check of the project: key → true (yes) / false (no)",
    )


class SubmitInput(serializers.Serializer):
    ratings = RatingInput(many=True)
    comment = serializers.CharField(allow_blank=True, required=False, default="", trim_whitespace=False)


class SubmitOutput(serializers.Serializer):
    annotation_id = serializers.IntegerField()
    status = serializers.CharField()
    created = serializers.BooleanField(help_text="false when this repeated an earlier successful submission")
    submitted_at = serializers.DateTimeField()
    contradictions = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="[a, b]: a ranked above b although b was rated higher",
    )
    today_count = serializers.IntegerField()


class SubmitApi(LabelerApi):
    @extend_schema(
        request=SubmitInput,
        responses={200: SubmitOutput, 400: ErrorOutput},
        summary="Submit your annotation (idempotent: a retry returns the stored one)",
    )
    def post(self, request, task_id: int):
        task = sel.task_for_labeler(request.user, task_id)
        data = SubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = annotation_submit(
            task=task,
            labeler=request.user,
            ratings=data.validated_data["ratings"],
            comment=data.validated_data["comment"],
        )
        a = result.annotation
        return Response(
            {
                "annotation_id": a.pk,
                "status": a.status,
                "created": result.created,
                "submitted_at": _datetime(a.submitted_at),
                "contradictions": [list(p) for p in result.contradictions],
                "today_count": result.today_count
                if result.today_count is not None
                else sel.labeler_today_count(request.user),
            }
        )


# --- skip -----------------------------------------------------------------------------------


class SkipInput(serializers.Serializer):
    reason = serializers.CharField(allow_blank=True, required=False, default="")


class SkipOutput(serializers.Serializer):
    annotation_id = serializers.IntegerField(source="pk")
    status = serializers.CharField()
    skip_reason = serializers.CharField()


class SkipApi(LabelerApi):
    @extend_schema(
        request=SkipInput, responses={200: SkipOutput, 400: ErrorOutput}, summary="Skip a task, with a reason"
    )
    def post(self, request, task_id: int):
        task = sel.task_for_labeler(request.user, task_id)
        data = SkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        annotation = annotation_skip(task=task, labeler=request.user, reason=data.validated_data["reason"])
        return Response(SkipOutput(annotation).data)


# --- lease renewal --------------------------------------------------------------------------


class RenewOutput(serializers.Serializer):
    lease_expires_at = serializers.DateTimeField(source="expires_at")


class RenewApi(LabelerApi):
    @extend_schema(request=None, responses={200: RenewOutput, 400: ErrorOutput}, summary="Extend your lease on a task")
    def post(self, request, task_id: int):
        task = sel.task_for_labeler(request.user, task_id)
        assignment = assignment_renew(task=task, labeler=request.user)
        return Response(RenewOutput(assignment).data)


# --- own annotations ------------------------------------------------------------------------


class AnnotationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    task = serializers.IntegerField(source="task_id")
    status = serializers.CharField()
    shown_order = serializers.ListField(child=serializers.IntegerField())
    comment = serializers.CharField()
    skip_reason = serializers.CharField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    review_state = serializers.CharField(help_text="pending, accepted or rejected (rejected labels are not trained on)")
    review_note = serializers.CharField(help_text="The reviewer's note (why a label was rejected)")
    revision_count = serializers.IntegerField(help_text="How often you revised it; the earlier versions are kept")
    ratings = serializers.SerializerMethodField()

    def get_ratings(self, annotation) -> list[dict]:
        return [
            {
                "completion": r.completion_id,
                "likert": r.likert,
                "rank": r.rank,
                "checks": {a.check_question.key: a.value for a in r.check_answers.all()},
            }
            for r in annotation.ratings.prefetch_related("check_answers__check_question")
        ]


class AnnotationDetailApi(LabelerApi):
    @extend_schema(responses=AnnotationOutput, summary="One of your annotations (others' answer 404)")
    def get(self, request, annotation_id: int):
        return Response(AnnotationOutput(sel.annotation_by_id_for_labeler(request.user, annotation_id)).data)


# --- revision of a submitted label ------------------------------------------------------------


class ReviseInput(SubmitInput):
    opened_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When you opened the label to revise it: the revision's time spent",
    )


class ReviseOutput(serializers.Serializer):
    annotation_id = serializers.IntegerField(source="pk")
    review_state = serializers.CharField()
    revision_count = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()


class ReviseApi(LabelerApi):
    @extend_schema(
        request=ReviseInput,
        responses={200: ReviseOutput, 400: ErrorOutput, 409: ErrorOutput},
        summary="Revise your submitted label until a researcher accepts it (the earlier version is kept)",
    )
    def post(self, request, task_id: int):
        task = sel.task_for_labeler(request.user, task_id)
        data = ReviseInput(data=request.data)
        data.is_valid(raise_exception=True)
        annotation = annotation_revise(
            task=task,
            labeler=request.user,
            ratings=data.validated_data["ratings"],
            comment=data.validated_data["comment"],
            opened_at=data.validated_data["opened_at"],
        )
        return Response(ReviseOutput(annotation).data)
