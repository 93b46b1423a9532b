"""Django admin for training jobs and model versions."""

from django.contrib import admin

from labeling_app.admin_paging import EstimatedCountAdmin

from .models import JobMetric, ModelVersion, TrainingJob


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "progress", "created_by", "created_at", "finished_at")
    list_filter = ("kind", "status")
    readonly_fields = ("heartbeat_at", "worker", "celery_task_id")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "name", "parent", "is_promoted", "created_at")
    list_filter = ("kind", "is_promoted")


@admin.register(JobMetric)
class JobMetricAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("job", "step", "key", "value")
    list_filter = ("key",)
