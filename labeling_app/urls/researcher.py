"""URLs of the researcher pages (/projects/...)."""

from django.urls import path

from labeling_app.views import quality, researcher, researcher_data, review, tasks

app_name = "researcher"
urlpatterns = [
    path("", researcher.project_list, name="project_list"),
    path("new/", researcher.project_new, name="project_new"),
    path("<int:pk>/", researcher.project_detail, name="project_detail"),
    path("<int:pk>/edit/", researcher.project_edit, name="project_edit"),
    path("<int:pk>/team/", researcher.project_team, name="project_team"),
    path("<int:pk>/prompts/", researcher.prompt_list, name="prompt_list"),
    path("<int:pk>/prompts/new/", researcher.prompt_new, name="prompt_new"),
    path("<int:pk>/prompts/<int:prompt_id>/", researcher.prompt_detail, name="prompt_detail"),
    path("<int:pk>/prompts/<int:prompt_id>/tasks/new/", researcher.task_new, name="task_new"),
    path(
        "<int:pk>/prompts/<int:prompt_id>/demonstrations/<int:demo_id>/",
        researcher.demonstration_edit,
        name="demonstration_edit",
    ),
    path("<int:pk>/tasks/", tasks.task_list, name="task_list"),
    path("<int:pk>/tasks/bulk/", tasks.task_bulk, name="task_bulk"),
    path("<int:pk>/tasks/<int:task_id>/", review.task_review, name="task_review"),
    path(
        "<int:pk>/tasks/<int:task_id>/labels/<int:annotation_id>/review/",
        review.annotation_review_view,
        name="annotation_review",
    ),
    path("<int:pk>/import/", researcher_data.import_upload, name="import_upload"),
    path("<int:pk>/imports/<int:job_id>/", researcher_data.import_job, name="import_job"),
    path("<int:pk>/imports/<int:job_id>/undo/", researcher_data.import_undo, name="import_undo"),
    path("<int:pk>/export/", researcher_data.export_page, name="export"),
    path("<int:pk>/export/download/", researcher_data.export_download, name="export_download"),
    path("<int:pk>/export/features/", researcher_data.export_features, name="export_features"),
    path("<int:pk>/quality/", quality.project_quality, name="quality"),
    path("<int:pk>/quality/refresh/", quality.project_quality_refresh, name="quality_refresh"),
    path("<int:pk>/quality/labelers/<int:user_id>/", quality.labeler_quality, name="labeler_quality"),
]
