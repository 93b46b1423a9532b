"""Django admin for the labeling data."""

from django.contrib import admin

from . import models
from .admin_paging import EstimatedCountAdmin


class CheckQuestionInline(admin.TabularInline):
    model = models.CheckQuestion
    extra = 0


class TeamMemberInline(admin.TabularInline):
    model = models.ProjectTeamMember
    extra = 0
    raw_id_fields = ("user",)


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "completions_per_task",
        "overlap",
        "overlap_max",
        "lease_minutes",
        "team_only",
        "created_at",
    )
    search_fields = ("name",)
    inlines = [CheckQuestionInline, TeamMemberInline]


@admin.register(models.Prompt)
class PromptAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "project", "__str__", "source", "created_at")
    list_select_related = ("project",)
    list_filter = ("project",)
    search_fields = ("text",)


@admin.register(models.Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "author", "created_at")
    list_select_related = ("prompt", "author")
    raw_id_fields = ("prompt",)


@admin.register(models.Completion)
class CompletionAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "prompt", "source", "model_name", "model_version", "created_at")
    list_select_related = ("prompt", "model_version")
    list_filter = ("source",)
    raw_id_fields = ("prompt", "demonstration", "model_version")


class TaskCompletionInline(admin.TabularInline):
    model = models.TaskCompletion
    raw_id_fields = ("completion",)
    extra = 0


@admin.register(models.RankingTask)
class RankingTaskAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "project", "prompt", "overlap", "submitted_count", "extra_labels", "created_at")
    list_select_related = ("project", "prompt")
    list_filter = ("project",)
    raw_id_fields = ("prompt",)
    inlines = [TaskCompletionInline]


@admin.register(models.Assignment)
class AssignmentAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "task", "labeler", "expires_at")
    list_select_related = ("task__project", "labeler")
    raw_id_fields = ("task",)


class RatingInline(admin.TabularInline):
    model = models.Rating
    raw_id_fields = ("completion",)
    extra = 0


@admin.register(models.Annotation)
class AnnotationAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "task", "labeler", "import_source", "status", "review_state", "submitted_at")
    list_select_related = ("task__project", "labeler", "import_source")
    list_filter = ("status", "review_state")
    raw_id_fields = ("task",)
    inlines = [RatingInline]


@admin.register(models.Rating)
class RatingAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "annotation", "completion", "likert", "rank")
    list_select_related = ("annotation", "completion")
    raw_id_fields = ("annotation", "completion")


@admin.register(models.CheckAnswer)
class CheckAnswerAdmin(EstimatedCountAdmin, admin.ModelAdmin):
    list_display = ("id", "rating", "check_question", "value")
    list_select_related = ("rating", "check_question")
    raw_id_fields = ("rating",)


admin.site.register(models.ImportSource)
admin.site.register(models.CheckQuestion)
