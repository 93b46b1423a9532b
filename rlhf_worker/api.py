"""Jobs API: start a training job (admins), checked by the same start service as the form."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from config.errors import ServiceError
from labeling_app.api.labeling import ErrorOutput, SafeJSONParser, TokenWithRolesAuthentication
from labeling_app.roles import ADMIN, HasRole
from rlhf_worker.models import TrainingJob
from rlhf_worker.selectors import job_kind_info, job_preset_get
from rlhf_worker.services.jobs import job_start


class JobStartInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingJob.Kind.values)
    preset = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text=(
            'Start from this preset of the kind ("Defaults", "Quick CPU demo" or a saved one); `config` overrides it'
        ),
    )
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text=(
            "Settings by name (as on the start form); missing ones take their default; no project_ids means every project"
        ),
    )


class JobOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    config = serializers.DictField(help_text="The normalised settings the job runs with")
    url = serializers.CharField(help_text="The job's page")


class JobStartApi(APIView):
    authentication_classes = [TokenWithRolesAuthentication, SessionAuthentication]  # as the labeling API
    permission_classes = [HasRole.of(ADMIN)]
    parser_classes = [SafeJSONParser] + [
        p for p in api_settings.DEFAULT_PARSER_CLASSES if not issubclass(p, JSONParser)
    ]

    @extend_schema(
        request=JobStartInput,
        responses={201: JobOutput, 400: ErrorOutput},
        summary="Start a training job; refused (400, naming the settings) when it could not run",
    )
    def post(self, request):
        data = JobStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        kind, config = data.validated_data["kind"], dict(data.validated_data["config"])
        if data.validated_data.get("preset"):
            preset = job_preset_get(job_kind_info(kind), data.validated_data["preset"])
            if preset is None:
                raise ServiceError(f"no {kind} preset called {data.validated_data['preset']!r}", field="preset")
            config = {**preset.config, **config}
        job = job_start(kind=kind, config=config, user=request.user)
        return Response(
            {
                "id": job.pk,
                "kind": job.kind,
                "status": job.status,
                "config": job.config,
                "url": reverse("jobs:detail", kwargs={"pk": job.pk}),
            },
            status=status.HTTP_201_CREATED,
        )
