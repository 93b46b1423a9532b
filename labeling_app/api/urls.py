"""REST API URLs (/api/...) and the OpenAPI schema and docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from labeling_app.api import exports, labeling
from rlhf_worker.api import JobStartApi

app_name = "api"
urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    # Labeler queue and annotations
    path("label/projects/<int:project_id>/next/", labeling.NextTaskApi.as_view(), name="label-next"),
    path("label/tasks/<int:task_id>/", labeling.TaskDetailApi.as_view(), name="label-task"),
    path("label/tasks/<int:task_id>/draft/", labeling.DraftApi.as_view(), name="label-draft"),
    path("label/tasks/<int:task_id>/submit/", labeling.SubmitApi.as_view(), name="label-submit"),
    path("label/tasks/<int:task_id>/skip/", labeling.SkipApi.as_view(), name="label-skip"),
    path("label/tasks/<int:task_id>/renew/", labeling.RenewApi.as_view(), name="label-renew"),
    path("label/tasks/<int:task_id>/revise/", labeling.ReviseApi.as_view(), name="label-revise"),
    path("label/annotations/<int:annotation_id>/", labeling.AnnotationDetailApi.as_view(), name="label-annotation"),
    # Researcher exports
    path("projects/<int:project_id>/export/", exports.ExportApi.as_view(), name="export"),
    path("projects/<int:project_id>/export/preview/", exports.ExportPreviewApi.as_view(), name="export-preview"),
    # Training jobs (admins)
    path("jobs/", JobStartApi.as_view(), name="jobs-start"),
]
