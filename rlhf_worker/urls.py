"""URLs of the training dashboard (/jobs/...)."""

from django.urls import path

from rlhf_worker.views import autopilot, jobs, models, workers

app_name = "jobs"
urlpatterns = [
    path("", jobs.job_list, name="list"),
    path("start/<slug:kind>/", jobs.job_start_form, name="start"),
    path("start/<slug:kind>/presets/", jobs.job_preset_save_view, name="preset_save"),
    path("presets/<int:pk>/delete/", jobs.job_preset_delete_view, name="preset_delete"),
    path("notices/dismiss/", jobs.job_notices_dismiss_view, name="notices_dismiss"),
    path("<int:pk>/", jobs.job_detail, name="detail"),
    path("<int:pk>/live/", jobs.job_live, name="live"),
    path("<int:pk>/series.json", jobs.job_series, name="series"),
    path("<int:pk>/cancel/", jobs.job_cancel_view, name="cancel"),
    path("<int:pk>/rerun/", jobs.job_rerun_view, name="rerun"),
    path("<int:pk>/resume/", jobs.job_resume_view, name="resume"),
    path("models/", models.model_version_list, name="models"),
    path("models/<int:pk>/", models.model_version_detail, name="model_detail"),
    path("models/<int:pk>/promote/", models.model_version_promote_view, name="promote"),
    path("workers/", workers.worker_list, name="workers"),
    path("autopilot/", autopilot.autopilot_list, name="autopilot"),
    path("autopilot/<int:pk>/", autopilot.autopilot_project, name="autopilot_project"),
    path("autopilot/<int:pk>/pause/", autopilot.autopilot_pause_view, name="autopilot_pause"),
    path("autopilot/<int:pk>/resume/", autopilot.autopilot_resume_view, name="autopilot_resume"),
    path("autopilot/<int:pk>/run/", autopilot.autopilot_run_now_view, name="autopilot_run"),
]
