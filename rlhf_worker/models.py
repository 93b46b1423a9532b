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
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="policies_trained",
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
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
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
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
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


class Autopilot(models.Model):
    """A project's training cycle on a schedule: after every `every_n_rankings` new human rankings, the scheduler
    (`services.autopilot.autopilots_tick`) starts a `PipelineRun`: reward → score → (PPO) → generate.

    `rankings_at_last_cycle` is the project's count of submitted human rankings when the last cycle started (or when
    the autopilot was set up): the next cycle is due once the count is `every_n_rankings` above it. `presets` names
    the job preset (`selectors.job_presets`: "Defaults", "Quick CPU demo" or a saved one) each step's job starts from.
    """

    project = models.OneToOneField("labeling_app.Project", on_delete=models.CASCADE, related_name="autopilot")
    paused = models.BooleanField(
        default=False, help_text="No new cycle starts, and a running cycle starts no next step."
    )
    every_n_rankings = models.PositiveIntegerField(
        default=100, help_text="Start a cycle after this many new human rankings."
    )
    include_ppo = models.BooleanField(default=False, help_text="Run a PPO job between scoring and generation.")
    auto_promote = models.BooleanField(
        default=False,
        help_text="Promote the cycle's reward model when its held-out accuracy does not drop below the "
        "promoted reward model's. Off: promotion stays a human decision.",
    )
    rankings_at_last_cycle = models.PositiveIntegerField(default=0)
    presets = models.JSONField(default=dict, blank=True, help_text="{job kind: preset name} for each step's job.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [CheckConstraint(condition=Q(every_n_rankings__gte=1), name="autopilot_every_n_at_least_1")]

    def __str__(self) -> str:
        return (
            f"autopilot of project {self.project_id} ({'paused' if self.paused else f'every {self.every_n_rankings}'})"
        )


class PipelineRun(models.Model):
    """One autopilot cycle: its steps' jobs in order. At most one is running or paused per autopilot (a partial
    unique index), so two scheduler ticks can never start two cycles of one project."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.RUNNING, Status.PAUSED)

    autopilot = models.ForeignKey(Autopilot, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    plan = models.JSONField(
        default=list, help_text='The job kinds of the cycle in order, e.g. ["reward", "score", "generate"].'
    )
    reason = models.TextField(
        blank=True, help_text="Why it failed (the failed step's error), or a note while it waits."
    )
    rankings_at_start = models.PositiveIntegerField(default=0)
    reward_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The reward model this cycle trained.",
    )
    promotion_note = models.TextField(blank=True, help_text="What auto-promote decided, and why.")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started it by hand; empty when the scheduler did.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            UniqueConstraint(
                fields=["autopilot"],
                condition=Q(status__in=["running", "paused"]),
                name="one_active_pipeline_per_autopilot",
            ),
        ]

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def __str__(self) -> str:
        return f"cycle #{self.pk} of project {self.autopilot.project_id if self.autopilot_id else '?'} ({self.status})"


class PipelineStep(models.Model):
    """One step of a cycle: the job it started (empty until started, or when the broker refused the job's message
    and the job row was withdrawn: the scheduler starts it again)."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=10, choices=TrainingJob.Kind.choices)
    job = models.ForeignKey(
        TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="pipeline_steps"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "position"]
        constraints = [UniqueConstraint(fields=["run", "position"], name="pipeline_step_position_unique")]

    def __str__(self) -> str:
        return f"step {self.position} ({self.kind}) of cycle {self.run_id}"
