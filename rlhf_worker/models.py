"""Training jobs (state, progress, metric series) and the model registry."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.db.models import CheckConstraint, Q, UniqueConstraint
from django.db.models.functions import Lower


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        POLICY = "policy", "Policy"
        REWARD = "reward", "Reward model"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=500, help_text="Folder with the weights (safetensors) and config.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    reward_model = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="policies_trained",
        help_text="For PPO policies: the reward model they were optimised against.",
    )
    training_job = models.ForeignKey("TrainingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    metrics = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    data_snapshot = models.JSONField(default=dict, blank=True, help_text="Which rows it was trained on.")
    is_promoted = models.BooleanField(default=False, help_text="The promoted policy is the default for generation.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            UniqueConstraint(fields=["kind"], condition=Q(is_promoted=True), name="one_promoted_version_per_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} {self.name}"


class TrainingJob(models.Model):
    class Kind(models.TextChoices):
        SFT = "sft", "Supervised fine-tuning"
        REWARD = "reward", "Reward model"
        PPO = "ppo", "PPO"
        GENERATE = "generate", "Generate candidates"
        SCORE = "score", "Score completions"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Lost"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.LOST)

    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    config = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    samples = models.JSONField(default=list, blank=True, help_text="Recent sample generations (PPO).")
    summary = models.JSONField(default=dict, blank=True, help_text="Latest value of each metric.")
    celery_task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        constraints = [CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="job_progress_0_to_1")]

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def output_dir(self) -> Path:
        """Where the runner writes this job's checkpoints and models (under MODEL_STORE, shared by all workers)."""
        return job_output_dir(self.kind, self.pk)
    def duration_seconds(self, now=None) -> float | None:
        """Seconds it ran: started to finished, or started to `now` while it runs; None if it never started."""
        if self.started_at is None:
            return None
        end = self.finished_at or (None if self.is_finished else (now or timezone.now()))
        return max(0.0, (end - self.started_at).total_seconds()) if end else None

    def eta_from_progress(self, now=None) -> float | None:
        """Seconds left at the pace so far (elapsed × (1 − progress) / progress); None unless running with progress."""
        if self.status != self.Status.RUNNING or not 0 < self.progress < 1:
            return None
        elapsed = self.duration_seconds(now)
        return None if elapsed is None else elapsed * (1 - self.progress) / self.progress

    @property
    def error_first_line(self) -> str:
        """Why it failed, in one line (the job page shows the whole error)."""
        return next((line.strip() for line in (self.error or "").splitlines() if line.strip()), "")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job #{self.pk} ({self.status})"


def job_output_dir(kind: str, job_id: int) -> Path:
    """The output folder of job `job_id` of `kind` (TrainingJob.output_dir without the row)."""
    return Path(settings.MODEL_STORE) / "jobs" / f"{kind}-{job_id}"


class JobMetric(models.Model):
    """One point of a job's metric series ("train/loss" at step 40 = 0.61)."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metric_points")
    step = models.PositiveIntegerField()
    key = models.CharField(max_length=100)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]
        # One value per series and step: a progress write retried after its commit's reply was lost (a database
        # restart at that moment) writes the same points again, and they must replace, not double, the first ones.
        # Its index serves the series reads too.
        constraints = [UniqueConstraint(fields=["job", "key", "step"], name="jobmetric_one_per_series_step")]


class CompletionScore(models.Model):
    """A reward model's normalised score of one completion, shown next to the labels (written by score jobs)."""

    completion = models.ForeignKey("labeling_app.Completion", on_delete=models.CASCADE, related_name="scores")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="completion_scores")
    score = models.FloatField()
    job = models.ForeignKey(TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    scored_at = models.DateTimeField()

    class Meta:
        ordering = ["completion_id", "model_version_id"]
        constraints = [
            UniqueConstraint(fields=["completion", "model_version"], name="completion_score_one_per_version"),
        ]

    def __str__(self) -> str:
        return f"{self.score:+.3f} for completion {self.completion_id} by {self.model_version_id}"


class JobPreset(models.Model):
    """Settings an admin saved under a name for one job kind, to start the next job of that kind from.

    The built-in presets ("Defaults", "Quick CPU demo") live in code (`rlhf_worker.presets`), not here.
    `config` is the normalised config the start form produced; settings added to a kind later take their default.
    """

    kind = models.CharField(max_length=10, choices=TrainingJob.Kind.choices)
    name = models.CharField(max_length=100)
    config = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [UniqueConstraint(Lower("name"), "kind", name="job_preset_name_unique_per_kind")]

    def __str__(self) -> str:
        return f"{self.kind} preset {self.name!r}"


class JobNoticesSeen(models.Model):
    """Until when a user has seen the notices of their jobs that ended (moved forward only by dismissing them)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="job_notices_seen")
    seen_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user} saw job notices until {self.seen_until:%Y-%m-%d %H:%M:%S}"
