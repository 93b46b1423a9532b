"""Researchers' writes: editing projects and their checks, writing prompts and demonstrations one by one."""
from __future__ import annotations

import json
from typing import Sequence

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Greatest
from django.utils.text import slugify

from config.errors import ServiceError
from labeling_app.imports.parsing import parse_chat_prompt
from labeling_app.models import Annotation, CheckQuestion, Completion, Demonstration, Project, Prompt, RankingTask
from labeling_app.services.projects import task_create


class AuthoringError(ValueError):
    """A user error; `field` names the form field to show it next to."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def project_update(*, project: Project, name: str, instructions: str, completions_per_task: int, overlap: int,
                   lease_minutes: int) -> Project:
    """Change a project's settings. K is fixed once tasks exist; a new overlap applies to the open
    tasks labelers make (never below the labels a task already has), not to imported-label tasks."""
    if completions_per_task != project.completions_per_task and project.tasks.exists():
        raise AuthoringError("completions_per_task", f"K cannot change: the project already has {project.tasks.count()} "
                                                     f"tasks built with K={project.completions_per_task}. Make a new project for another K.")
    if not 2 <= completions_per_task <= 9:
        raise AuthoringError("completions_per_task", "K must be from 2 to 9")
    if overlap < 1:
        raise AuthoringError("overlap", "overlap must be at least 1")
    if lease_minutes < 1:
        raise AuthoringError("lease_minutes", "the lease must be at least 1 minute")
    with transaction.atomic():
        old_overlap = project.overlap
        project.name, project.instructions = name, instructions
        project.completions_per_task, project.overlap, project.lease_minutes = completions_per_task, overlap, lease_minutes
        try:
            with transaction.atomic():
                project.save()
        except IntegrityError:
            raise AuthoringError("name", f"a project named {name!r} already exists") from None
        if overlap != old_overlap:
            imported = Exists(Annotation.objects.filter(task=OuterRef("pk"), labeler__isnull=True))
            RankingTask.objects.filter(project=project).exclude(imported).update(overlap=Greatest(overlap, "submitted_count"))
    return project


def check_add(*, project: Project, question: str, key: str = "") -> CheckQuestion:
    question = question.strip()
    if not question:
        raise AuthoringError("new_question", "the question is empty")
    key = slugify(key or question)[:64].replace("-", "_") or "check"
    base, n = key, 2
    while project.checks.filter(key=key).exists():
        key, n = f"{base[:60]}_{n}", n + 1
    position = (project.checks.order_by("-position").values_list("position", flat=True).first() or 0) + 1
    return CheckQuestion.objects.create(project=project, key=key, question=question[:300], position=position)


def check_update(*, check: CheckQuestion, question: str, active: bool) -> CheckQuestion:
    """Reword or (de)activate a check; a deactivated check is no longer asked, its old answers stay."""
    question = question.strip()
    if not question:
        raise AuthoringError(f"check-{check.pk}-question", "the question is empty (untick 'asked' to stop asking it)")
    check.question, check.active = question[:300], active
    check.save(update_fields=["question", "active"])
    return check


def parse_chat(raw: str | list) -> tuple[str, list[dict]]:
    """(last user turn, messages) from a chat editor's JSON; AuthoringError says what is wrong."""
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise AuthoringError("messages", f"the conversation is not valid JSON: {exc.msg}") from None
    try:
        return parse_chat_prompt(value, field="messages")
    except ServiceError as exc:
        raise AuthoringError("messages", exc.message) from None


def prompt_create(*, project: Project, text: str = "", messages: list | None = None, user=None, source: str = "") -> Prompt:
    """One prompt, plain or chat (for chat, `text` is taken from the last user turn)."""
    if messages:
        text, messages = parse_chat(messages)
    elif not text.strip():
        raise AuthoringError("text", "write the prompt (or switch to a chat conversation)")
    prompt = Prompt(project=project, text=text, messages=messages or None, created_by=user, source=source or "written")
    try:
        with transaction.atomic():
            prompt.save()
    except IntegrityError:
        existing = Prompt.objects.filter(project=project, content_hash=prompt.content_hash).values_list("pk", flat=True).first()
        raise AuthoringError("text", f"this prompt is already in the project (prompt #{existing})") from None
    return prompt


def demonstration_save(*, prompt: Prompt, text: str, user=None, demonstration: Demonstration | None = None,
                       as_completion: bool = False) -> Demonstration:
    """Write or edit the ideal answer to a prompt; with as_completion it is also a completion to rank
    (source=demonstration), kept in step with later edits while no task uses it."""
    if not text.strip():
        raise AuthoringError("text", "the demonstration is empty")
    with transaction.atomic():
        if demonstration is None:
            demonstration = Demonstration.objects.create(prompt=prompt, text=text, author=user, source="written")
        else:
            demonstration.text = text
            demonstration.save(update_fields=["text", "updated_at"])
            # A completion already in a task keeps the text its labels were given for.
            Completion.objects.filter(demonstration=demonstration, tasks__isnull=True).update(text=text)
        if as_completion and not Completion.objects.filter(demonstration=demonstration, text=text).exists():
            Completion.objects.create(prompt=prompt, text=text, source=Completion.Source.DEMONSTRATION,
                                      demonstration=demonstration)
    return demonstration


def task_create_from(*, prompt: Prompt, completion_ids: Sequence[int], shuffle_seed: int | None = None) -> RankingTask:
    """A ranking task from K chosen completions of a prompt (model outputs, imports, demonstrations)."""
    project = prompt.project
    completions = list(Completion.objects.filter(prompt=prompt, pk__in=list(completion_ids)))
    if len(completions) != project.completions_per_task:
        raise AuthoringError("completions", f"pick exactly {project.completions_per_task} completions (K of this project); "
                                            f"you picked {len(completions)}")
    return task_create(project=project, prompt=prompt, completions=completions, shuffle_seed=shuffle_seed)
