"""Researcher export API: a project's dataset export as a streamed file, and its preview (row count, first rows, schema).

`?format=` names the export format here, as on the page and in `manage.py export_data`, not one of DRF's
renderers. A selection with no rows answers 404 with a `detail` that says which filters to loosen,
never an empty file.
"""

from __future__ import annotations

from types import SimpleNamespace

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ServiceError
from labeling_app.api.labeling import ErrorOutput, TokenWithRolesAuthentication
from labeling_app.roles import RESEARCHER, HasRole
from labeling_app.selectors.export_preview import export_count, export_preview
from labeling_app.selectors.exports import EMPTY_SELECTION, FILE_TYPES, FORMATS, export_filters
from labeling_app.selectors.labels import DEFAULT_MIN_AGREEMENT, DateRange, rejected_left_out
from labeling_app.selectors.projects import project_or_404
from labeling_app.views.researcher_data import export_response

MAX_PREVIEW_ROWS = 20


class _FormatIsTheExportFormat(DefaultContentNegotiation):
    """Content negotiation by the Accept header only: `?format=pairwise` is not a renderer's name here."""

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


class ExportQuery(serializers.Serializer):
    format = serializers.ChoiceField(choices=FORMATS, default="pairwise")
    file = serializers.ChoiceField(choices=FILE_TYPES, default="jsonl", help_text="jsonl or parquet")
    date_from = serializers.CharField(required=False, allow_blank=True, help_text="YYYY-MM-DD, inclusive")
    date_to = serializers.CharField(required=False, allow_blank=True, help_text="YYYY-MM-DD, inclusive")
    labeler = serializers.CharField(required=False, allow_blank=True, help_text='A username, or "import:<source>".')
    full_overlap = serializers.BooleanField(default=False)
    only_agreeing = serializers.BooleanField(default=False)
    min_agreement = serializers.FloatField(default=DEFAULT_MIN_AGREEMENT, min_value=0, max_value=1)
    include_imported = serializers.BooleanField(default=True)
    all_chat = serializers.BooleanField(
        default=False, help_text="Chat in any case (a selection with a chat prompt is chat anyway)."
    )
    rows = serializers.IntegerField(
        default=5, min_value=0, max_value=MAX_PREVIEW_ROWS, help_text="Preview only: how many rows."
    )

    def validate(self, data):
        try:
            DateRange.parse(data.get("date_from"), data.get("date_to"))
        except ServiceError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from None
        return data


class ExportPreviewOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="Rows the export holds.")
    columns = serializers.ListField(child=serializers.CharField())
    chat = serializers.BooleanField(help_text="Prompts and answers are written as message lists.")
    rows = serializers.ListField(child=serializers.DictField(), help_text="The first rows, whole.")
    features = serializers.DictField(help_text="datasets.Features.from_dict(...) of the JSONL file.")
    detail = serializers.CharField(required=False, help_text="Present when count is 0: what to loosen.")
    rejected_left_out = serializers.IntegerField(
        help_text="Labels of the selection a researcher rejected, so left out (0 for sft)."
    )


class ResearcherExportApi(APIView):
    authentication_classes = [TokenWithRolesAuthentication, SessionAuthentication]
    permission_classes = [HasRole.of(RESEARCHER)]
    content_negotiation_class = _FormatIsTheExportFormat

    def query(self, request, project_id: int):
        project = project_or_404(project_id)
        query = ExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)  # answered as {"detail", "errors"} (ErrorOutput), like a service's refusal
        return project, query.validated_data


class ExportApi(ResearcherExportApi):
    @extend_schema(
        parameters=[ExportQuery],
        responses={
            (200, "application/jsonl"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The JSONL file, one record per line, streamed."
            ),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The Parquet file, streamed."
            ),
            404: ErrorOutput,
        },
    )
    def get(self, request, project_id: int):
        """A project's export as a file (`file=jsonl|parquet`); 404 with a message when the selection has no rows."""
        project, data = self.query(request, project_id)
        filters = export_filters([project.pk], data)
        if export_count(data["format"], filters) == 0:
            raise ServiceError(EMPTY_SELECTION, status=404)
        return export_response(project.name, data["format"], data["file"], filters)


class ExportPreviewApi(ResearcherExportApi):
    @extend_schema(parameters=[ExportQuery], responses={200: ExportPreviewOutput, 400: ErrorOutput})
    def get(self, request, project_id: int):
        """What the export holds: row count, columns, the first rows and the JSONL file's datasets Features."""
        project, data = self.query(request, project_id)
        filters = export_filters([project.pk], data)
        preview = export_preview(data["format"], filters, limit=data["rows"])
        body = {
            "count": preview.count,
            "columns": preview.columns,
            "chat": preview.chat,
            "rows": preview.rows,
            "features": preview.features,
            "rejected_left_out": 0 if data["format"] == "sft" else rejected_left_out(filters),
        }
        if preview.count == 0:
            body["detail"] = EMPTY_SELECTION
        return Response(body)
