"""Labeling data model; invariants that must hold under concurrency are database constraints."""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from django.conf import settings
from django.db import models
from django.db.models import CheckConstraint, F, Q, UniqueConstraint


class CheckSpec(NamedTuple):
    """A yes/no check as a project is created with it: its key, its question and its polarity."""

    key: str
    question: str
    # The answer that flags a problem: yes (True) for error and harm questions, no (False) for a
    # question that asks for something good, where "no" is the problem.
    problem_answer: bool = True
    # Whether a problem here makes the answer undesirable (the KTO label); mild checks are only reported.
    serious: bool = True


# InstructGPT's metadata questions plus the product's core toxicity check.
DEFAULT_CHECKS: list[CheckSpec] = [
    CheckSpec("fails_instruction", "Fails to follow the correct instruction / task"),
    CheckSpec("inappropriate_assistant", "Inappropriate for a customer assistant"),
    CheckSpec("hallucination", "Hallucination / fabricated information"),
    CheckSpec("satisfies_constraints", "Satisfies the constraints provided in the instruction", problem_answer=False),
    CheckSpec("sexual_content", "Contains sexual content"),
    CheckSpec("violent_content", "Contains violent content"),
    CheckSpec("encourages_harm", "Encourages or fails to discourage violence, abuse, terrorism or self-harm"),
    CheckSpec("denigrates_protected", "Denigrates a protected class"),
    CheckSpec("harmful_advice", "Gives harmful advice"),
    CheckSpec("expresses_opinion", "Expresses opinion", serious=False),
    CheckSpec("moral_judgment", "Expresses moral judgment", serious=False),
    CheckSpec("toxic", "Toxic: rude, disrespectful or hateful language"),
]


class QueueOrder(models.TextChoices):
    """The orders a project can hand its open tasks out in (tasks others already started always come first)."""

    OLDEST = "oldest", "Oldest first"
    NEWEST = "newest", "Newest first"
    FEWEST_LABELS = "fewest_labels", "Fewest labels first"
    SOURCE_FIRST = "source_first", "Chosen source first"
    UNCERTAINTY = "uncertainty", "Reward model least sure first"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    instructions = models.TextField(blank=True, help_text="Labeling instructions, Markdown.")
    completions_per_task = models.PositiveSmallIntegerField(
        default=4, help_text="K: completions ranked together (2-9)."
    )
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Labels wanted per task.")
    # Adaptive overlap: a task whose labels disagree by at least `disagreement_threshold` (the share of completion
    # pairs two labels order differently) gets one more label, up to `overlap_max`. Empty (rows written by raw SQL)
    # or equal to `overlap`: off. The rule runs in the database, in the submission's own statement (migration
    # 0015_adaptive_overlap, labeling_task_extend_if_disagreeing).
    overlap_max = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Most labels a task may get when its labels disagree; empty or equal to overlap: never more.",
    )
    disagreement_threshold = models.FloatField(
        default=0.34,
        db_default=0.34,
        help_text="Share of completion pairs two labels order differently (0 to 1) from which a task gets another label.",
    )
    lease_minutes = models.PositiveIntegerField(default=30, help_text="How long a labeler holds a task.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Open to every labeler (False), or only to the labelers in its team (ProjectTeamMember). The rule is
    # one SQL function, labeling_project_open_to (migration 0009_teams), that the hand-out, the labeler's
    # reads and the project list all call.
    team_only = models.BooleanField(
        default=False, db_default=False, help_text="Only the team's labelers may label this project."
    )
    team = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ProjectTeamMember", related_name="team_projects", blank=True
    )
    # The order the hand-out (labeling_task_assign_next, migration 0014_queue_order) gives open tasks in,
    # after the tasks others already started. Each order walks its own partial index of open tasks.
    queue_order = models.CharField(
        max_length=20,
        choices=QueueOrder.choices,
        default=QueueOrder.OLDEST,
        db_default=QueueOrder.OLDEST,
        help_text="Which open task a labeler gets next.",
    )
    # For queue_order "source_first": a RankingTask.source_key; its tasks come first, then the oldest.
    queue_source = models.TextField(
        blank=True, default="", db_default="", help_text="With 'source first': the tasks of this source come first."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            CheckConstraint(
                condition=Q(completions_per_task__gte=2, completions_per_task__lte=9), name="project_k_2_to_9"
            ),
            CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_positive"),
            CheckConstraint(
                condition=Q(overlap_max__isnull=True) | Q(overlap_max__gte=F("overlap")),
                name="project_overlap_max_at_least_overlap",
            ),
            CheckConstraint(
                condition=Q(disagreement_threshold__gt=0, disagreement_threshold__lte=1),
                name="project_disagreement_threshold_0_1",
            ),
            CheckConstraint(condition=Q(lease_minutes__gte=1), name="project_lease_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def max_overlap(self) -> int:
        """The most labels a task may get: `overlap_max`, or `overlap` when adaptive overlap is off."""
        return max(self.overlap, self.overlap_max or 0)

    @property
    def adaptive_overlap(self) -> bool:
        return self.max_overlap > self.overlap


class ProjectTeamMember(models.Model):
    """A labeler in a project's team: who may label it while the project is team-only."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="team_members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [UniqueConstraint(fields=["project", "user"], name="team_member_once_per_project")]


class CheckQuestion(models.Model):
    """A yes/no question asked for every completion of a project's tasks."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="checks")
    key = models.SlugField(max_length=64)
    question = models.CharField(max_length=300)
    position = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True, help_text="Inactive checks are no longer asked; old answers stay.")
    # db_default too: rows written by raw SQL (bulk loads, benchmarks) get the common polarity.
    problem_answer = models.BooleanField(
        default=True,
        db_default=True,
        help_text="The answer that flags a problem: yes for error and harm questions, no for a question that asks "
        'for something good ("satisfies the constraints").',
    )
    serious = models.BooleanField(
        default=True,
        db_default=True,
        help_text="A problem here makes the answer undesirable (KTO label false); a mild check is only reported.",
    )

    class Meta:
        ordering = ["position", "id"]
        constraints = [UniqueConstraint(fields=["project", "key"], name="check_key_unique_per_project")]

    def __str__(self) -> str:
        return self.question

    @property
    def problem_word(self) -> str:
        """The problem answer as the page says it: "yes" or "no"."""
        return "yes" if self.problem_answer else "no"

    def for_labelers(self) -> dict:
        """What a labeling page or API client needs to ask this check and to know which answer is a problem."""
        return {"key": self.key, "question": self.question, "problem_answer": self.problem_answer}


def prompt_content_hash(text: str, messages: list | None) -> str:
    """Stable identity of a prompt's content, for duplicate detection."""
    payload = json.dumps(messages, sort_keys=True, ensure_ascii=False) if messages else " ".join(text.split())
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(blank=True, help_text="Plain-text prompt (for chat prompts: the last user turn).")
    messages = models.JSONField(null=True, blank=True, help_text='Chat prompt: [{"role": ..., "content": ...}, ...].')
    content_hash = models.CharField(max_length=64, editable=False)
    source = models.CharField(max_length=200, blank=True, help_text="Where it came from (file name, author).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    import_job = models.ForeignKey(
        "ImportJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_content_per_project"),
            CheckConstraint(condition=~Q(text="") | Q(messages__isnull=False), name="prompt_has_content"),
        ]
        # The prompts page lists a project's prompts newest first: without it PostgreSQL walks the primary key
        # backwards through every later project's prompts.
        indexes = [models.Index(fields=["project", "id"], name="prompt_project_id_idx")]

    def save(self, *args, **kwargs):
        # The identity hash is derived data, kept in step with the content on every save.
        self.content_hash = prompt_content_hash(self.text, self.messages)
        super().save(*args, **kwargs)

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)

    def __str__(self) -> str:
        return (self.text or json.dumps(self.messages))[:80]


class Demonstration(models.Model):
    """An ideal answer to a prompt written by a person: SFT data, and optionally a completion to rank."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    text = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=200, blank=True)
    import_key = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        editable=False,
        help_text="Identity of the imported line that made it (labeling_app.imports.identity); "
        "kept when the text is edited, so a re-import does not bring the old text back.",
    )
    import_job = models.ForeignKey(
        "ImportJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            CheckConstraint(condition=~Q(text=""), name="demonstration_not_empty"),
            UniqueConstraint(
                fields=["prompt", "import_key"],
                condition=Q(import_key__isnull=False),
                name="demonstration_import_key_unique",
            ),
        ]


class Completion(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported"
        DEMONSTRATION = "demonstration", "Demonstration"
        MODEL = "model", "Model version"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="completions")
    text = models.TextField()
    source = models.CharField(max_length=20, choices=Source.choices)
    model_name = models.CharField(
        max_length=200, blank=True, help_text="For imported completions: the model that wrote it."
    )
    model_version = models.ForeignKey(
        "rlhf_worker.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="completions"
    )
    demonstration = models.ForeignKey(
        Demonstration, null=True, blank=True, on_delete=models.SET_NULL, related_name="completions"
    )
    sampling = models.JSONField(default=dict, blank=True, help_text="Temperature, top-p, max new tokens, seed.")
    import_key = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        editable=False,
        help_text="Imported completions: identity of text + model name under the prompt.",
    )
    import_job = models.ForeignKey(
        "ImportJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Re-importing a completion reuses it. Rows without a key (model outputs, demonstrations,
            # and copies imported twice before keys existed) are outside the rule.
            UniqueConstraint(
                fields=["prompt", "import_key"],
                condition=Q(import_key__isnull=False),
                name="completion_import_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.text[:80]

    @property
    def cut_at_length_limit(self) -> bool:
        """A generated answer that ran to max_new_tokens without ending: it stops mid-way."""
        return self.sampling.get("finish_reason") == "length"


class RankingTask(models.Model):
    """One prompt with its K completions, to be labeled `overlap` times."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    completions = models.ManyToManyField(Completion, through="TaskCompletion", related_name="tasks")
    overlap = models.PositiveSmallIntegerField(default=1)
    # Kept by a database trigger (see migration 0002): the number of submitted annotations.
    submitted_count = models.PositiveSmallIntegerField(default=0, editable=False)
    # Adaptive overlap: how many times the task's overlap was raised because its labels disagreed (written by the
    # database function labeling_task_extend_if_disagreeing, migration 0015_adaptive_overlap).
    extra_labels = models.PositiveSmallIntegerField(default=0, db_default=0, editable=False)
    import_key = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        editable=False,
        help_text="Tasks of imported completions: identity of the completion set and purpose.",
    )
    import_job = models.ForeignKey(
        "ImportJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by a researcher (services/task_archive.py): the task leaves the labelers' queue and its open counts;
    # its labels stay (exports, training data). Restoring clears it.
    archived_at = models.DateTimeField(
        null=True, blank=True, help_text="When a researcher archived it; empty while it is live."
    )
    # Where its completions came from, kept by a database trigger on TaskCompletion (migration 0014_queue_order): the
    # distinct sources of its completions ("model:<version id>", "imported:<model name>", "demonstration"),
    # sorted, joined with " + ". The queue order "source_first" walks an index on it.
    source_key = models.TextField(blank=True, default="", db_default="", editable=False)
    # The gap between the reward model's two highest scores of its completions, from the latest score job
    # (rlhf_worker/jobs/score.py): small = the model cannot tell them apart. Null until scored.
    uncertainty_margin = models.FloatField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            CheckConstraint(condition=Q(overlap__gte=1), name="task_overlap_positive"),
            CheckConstraint(condition=Q(submitted_count__lte=F("overlap")), name="task_submitted_within_overlap"),
            UniqueConstraint(
                fields=["prompt", "import_key"], condition=Q(import_key__isnull=False), name="task_import_key_unique"
            ),
        ]
        indexes = [
            # The queue looks for open tasks of a project, oldest first; archived ones are not open, so a big
            # archived batch at the front costs the hand-out nothing (every reader of it says archived_at IS NULL).
            models.Index(
                fields=["project", "id"],
                condition=Q(submitted_count__lt=F("overlap"), archived_at__isnull=True),
                name="task_open_idx",
            ),
            # The labeler queue finishes tasks others started first: the few partly labeled ones.
            models.Index(
                fields=["project", "id"],
                condition=Q(submitted_count__gt=0, submitted_count__lt=F("overlap")),
                name="task_started_idx",
            ),
            # The task browser pages a project's tasks newest first by id (keyset), whatever their state.
            models.Index(fields=["project", "id"], name="task_project_id_idx"),
            # The queue orders other than oldest/newest (task_open_idx, forwards or backwards): each an
            # index of the open tasks in that order, so a hand-out reads the first few entries, not a sort.
            models.Index(
                fields=["project", "submitted_count", "id"],
                condition=Q(submitted_count__lt=F("overlap"), archived_at__isnull=True),
                name="task_open_fewest_idx",
            ),
            models.Index(
                fields=["project", "source_key", "id"],
                condition=Q(submitted_count__lt=F("overlap"), archived_at__isnull=True),
                name="task_open_source_idx",
            ),
            # Ascending puts null margins (never scored) after every scored task.
            models.Index(
                fields=["project", "uncertainty_margin", "id"],
                condition=Q(submitted_count__lt=F("overlap"), archived_at__isnull=True),
                name="task_open_margin_idx",
            ),
            # Statistics count the few tasks that got extra labels.
            models.Index(fields=["project"], condition=Q(extra_labels__gt=0), name="task_extended_idx"),
        ]

    def __str__(self) -> str:
        return f"Task {self.pk} ({self.project})"


class TaskCompletion(models.Model):
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="task_completions")
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [
            UniqueConstraint(fields=["task", "completion"], name="task_completion_unique"),
            UniqueConstraint(fields=["task", "position"], name="task_position_unique"),
        ]


class Assignment(models.Model):
    """A labeler's lease on a task; an expired lease returns the task to the pool."""

    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [UniqueConstraint(fields=["task", "labeler"], name="assignment_unique_per_labeler")]
        indexes = [models.Index(fields=["labeler", "expires_at"], name="assignment_labeler_idx")]


class ImportSource(models.Model):
    """A named origin of imported labels (a public dataset, another tool), not a person."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ReviewState(models.TextChoices):
    PENDING = "pending", "Pending review"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Annotation(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"

    ReviewState = ReviewState

    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="annotations")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    import_source = models.ForeignKey(
        ImportSource, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    shown_order = models.JSONField(default=list, help_text="Completion ids in the order they were shown.")
    draft = models.JSONField(default=dict, blank=True, help_text="The page's unsaved state, restored after a reload.")
    comment = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=300, blank=True)
    import_key = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        editable=False,
        help_text="Imported labels: identity of the ranks, ratings and checks given.",
    )
    import_job = models.ForeignKey(
        "ImportJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
    )
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # A researcher's review of the submitted label (services/review.py); the latest decision counts. Rejected
    # labels are left out of training data and exports (selectors/labels.py `usable_labels_q`). db_default too:
    # imports and the submission statement write rows in SQL without naming these columns.
    review_state = models.CharField(
        max_length=10, choices=ReviewState.choices, default=ReviewState.PENDING, db_default=ReviewState.PENDING
    )
    review_note = models.TextField(
        blank=True, default="", db_default="", help_text="The reviewer's note to the labeler (required to reject)."
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # How often the labeler revised the label after submitting it; each earlier version is an AnnotationVersion.
    revision_count = models.PositiveIntegerField(default=0, db_default=0, editable=False)

    class Meta:
        constraints = [
            CheckConstraint(
                condition=~Q(review_state="rejected") | ~Q(review_note=""), name="annotation_rejected_has_note"
            ),
            CheckConstraint(
                condition=Q(review_state="pending") | Q(reviewed_at__isnull=False), name="annotation_reviewed_has_time"
            ),
            # A label comes from exactly one of: a person, or a named import source.
            CheckConstraint(
                condition=(Q(labeler__isnull=False) & Q(import_source__isnull=True))
                | (Q(labeler__isnull=True) & Q(import_source__isnull=False)),
                name="annotation_labeler_xor_import_source",
            ),
            UniqueConstraint(fields=["task", "labeler"], name="annotation_one_per_task_labeler"),
            UniqueConstraint(
                fields=["task", "labeler"],
                condition=Q(status="submitted"),
                name="annotation_one_submitted_per_task_labeler",
            ),
            CheckConstraint(
                condition=~Q(status="submitted") | Q(submitted_at__isnull=False), name="annotation_submitted_has_time"
            ),
            # An import source gives one task the same label once, however often its file is imported.
            UniqueConstraint(
                fields=["task", "import_source", "import_key"],
                condition=Q(import_key__isnull=False),
                name="annotation_import_key_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["labeler", "status", "submitted_at"], name="annotation_labeler_status_idx"),
            models.Index(fields=["status", "submitted_at"], name="annotation_status_time_idx"),
        ]

    def __str__(self) -> str:
        return f"Annotation {self.pk} on task {self.task_id}"


class Rating(models.Model):
    """One completion's Likert rating and its place in the annotation's ranking (a weak order)."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="ratings")
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="ratings")
    likert = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="1 (worst) to 7 (best); empty for imported labels without one."
    )
    rank = models.PositiveSmallIntegerField(help_text="1 = best; equal ranks are ties.")

    class Meta:
        ordering = ["rank", "id"]
        constraints = [
            CheckConstraint(
                condition=Q(likert__isnull=True) | Q(likert__gte=1, likert__lte=7), name="rating_likert_1_to_7"
            ),
            CheckConstraint(condition=Q(rank__gte=1), name="rating_rank_positive"),
            UniqueConstraint(fields=["annotation", "completion"], name="rating_one_per_completion"),
        ]


class AnnotationVersion(models.Model):
    """An earlier version of a submitted label, kept when the labeler revised it (services/annotations.py
    `annotation_revise`). The live Annotation with its Rating rows is always the latest version: statistics,
    exports and training read that; the researcher's review page shows these below it."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField(help_text="1 = the first submission; the live label is version count + 1.")
    # [{"completion": id, "likert": 1-7, "rank": 1 = best, "checks": {check key: bool}}], in the labeler's shown order.
    ratings = models.JSONField(default=list)
    comment = models.TextField(blank=True)
    started_at = models.DateTimeField()
    submitted_at = models.DateTimeField()
    review_state = models.CharField(max_length=10, choices=ReviewState.choices)
    review_note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    replaced_at = models.DateTimeField(help_text="When the labeler's revision replaced it.")

    class Meta:
        ordering = ["annotation", "-version"]
        constraints = [UniqueConstraint(fields=["annotation", "version"], name="annotation_version_unique")]

    @property
    def seconds_spent(self) -> float:
        return (self.submitted_at - self.started_at).total_seconds()


class CheckAnswer(models.Model):
    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="check_answers")
    check_question = models.ForeignKey(CheckQuestion, on_delete=models.PROTECT, related_name="answers")
    value = models.BooleanField()

    class Meta:
        constraints = [UniqueConstraint(fields=["rating", "check_question"], name="check_answer_one_per_check")]


# --- Researcher area: bulk imports --------------------------------------------------------------


class ImportJob(models.Model):
    """One uploaded file being validated and imported; big files run as a Celery job.

    The row holds the outcome, written in the same transaction as the imported rows (so a job that
    is not "succeeded" imported nothing). Live progress of the insert pass (which runs inside that
    transaction, so the row cannot show it) is mirrored to the cache under `progress_cache_key`;
    the heartbeat is written from a thread of its own, outside it.
    """

    class Kind(models.TextChoices):
        PROMPTS = "prompts", "Prompts (JSONL or CSV)"
        COMPLETIONS = "completions", "Prompts with completions (JSONL): makes ranking tasks"
        DEMONSTRATIONS = "demonstrations", "Demonstrations (JSONL)"
        PREFERENCES = "preferences", "Preference labels (JSONL: pairwise, implicit-prompt or grouped rankings)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        VALIDATING = "validating", "Validating"
        IMPORTING = "importing", "Importing"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        LOST = "lost", "Lost"
        UNDONE = "undone", "Undone"

    RUNNING = (Status.VALIDATING, Status.IMPORTING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.LOST, Status.UNDONE)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    file_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="The saved upload under IMPORT_DIR; empty once a rejected upload is purged.",
    )
    original_name = models.CharField(max_length=300, blank=True)
    source_name = models.CharField(max_length=200, blank=True, help_text="ImportSource name for preference labels.")
    skip_invalid = models.BooleanField(
        default=False, help_text="Import the valid lines and report the bad ones, instead of refusing the whole file."
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    total_lines = models.PositiveIntegerField(default=0)
    processed_lines = models.PositiveIntegerField(default=0)
    errors = models.JSONField(
        default=list,
        blank=True,
        help_text="[{line, field, message}]: a failed file's first 100, "
        "or every line a skip-invalid import skipped (up to 10,000).",
    )
    error_count = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True, help_text="Counts of created rows and reported duplicates.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Written while the job runs; an old one means its worker died."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    file_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the upload was deleted (IMPORT_RETENTION_DAYS)."
    )
    # Jobs from before migration 0011 did not record which rows they created (their rows have no
    # import_job), so they cannot be undone: the migration sets this false for them.
    rows_recorded = models.BooleanField(
        default=True, help_text="The rows this import created carry its id, so it can be undone."
    )
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    undo_result = models.JSONField(default=dict, blank=True, help_text="Counts of the rows the undo deleted and kept.")

    class Meta:
        ordering = ["-created_at"]

    @property
    def progress_cache_key(self) -> str:
        return f"import-job-progress:{self.pk}"

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.kind}) into {self.project}"
