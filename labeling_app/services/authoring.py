"""Researchers' writes one by one: prompts (plain or chat), demonstrations, and ranking tasks from chosen completions."""

from __future__ import annotations

from typing import Sequence

from django.db import IntegrityError, transaction

from config.errors import ServiceError
from labeling_app.imports.parsing import parse_chat_prompt
from labeling_app.models import Completion, Demonstration, Project, Prompt, RankingTask
from labeling_app.services.projects import task_create
from labeling_app.validation import JsonInputError, json_loads, text_problem


def parse_chat(raw: str | list) -> tuple[str, list[dict]]:
    """(last user turn, messages) from a chat editor's JSON; a ServiceError on "messages" says what is wrong."""
    try:
        value = json_loads(raw) if isinstance(raw, str) else raw
    except JsonInputError as exc:
        raise ServiceError(f"the conversation cannot be read: {exc}", field="messages") from None
    return parse_chat_prompt(value, field="messages")


def prompt_create(
    *, project: Project, text: str = "", messages: list | None = None, user=None, source: str = ""
) -> Prompt:
    """One prompt, plain or chat (for chat, `text` is taken from the last user turn)."""
    if messages:
        text, messages = parse_chat(messages)
    elif not text.strip():
        raise ServiceError("write the prompt (or switch to a chat conversation)", field="text")
    elif text_problem(text):
        raise ServiceError(f"the prompt {text_problem(text)}", field="text")
    prompt = Prompt(project=project, text=text, messages=messages or None, created_by=user, source=source or "written")
    try:
        with transaction.atomic():
            prompt.save()
    except IntegrityError:
        existing = (
            Prompt.objects.filter(project=project, content_hash=prompt.content_hash)
            .values_list("pk", flat=True)
            .first()
        )
        raise ServiceError(
            f"this prompt is already in the project (prompt #{existing})", field="messages" if messages else "text"
        ) from None
    return prompt


def demonstration_save(
    *, prompt: Prompt, text: str, user=None, demonstration: Demonstration | None = None, as_completion: bool = False
) -> Demonstration:
    """Write or edit the ideal answer to a prompt; with as_completion it is also a completion to rank
    (source=demonstration), kept in step with later edits while no task uses it."""
    if not text.strip():
        raise ServiceError("the demonstration is empty", field="text")
    if text_problem(text):
        raise ServiceError(f"the demonstration {text_problem(text)}", field="text")
    with transaction.atomic():
        if demonstration is None:
            demonstration = Demonstration.objects.create(prompt=prompt, text=text, author=user, source="written")
        else:
            demonstration.text = text
            demonstration.save(update_fields=["text", "updated_at"])
            # A completion already in a task keeps the text its labels were given for.
            Completion.objects.filter(demonstration=demonstration, tasks__isnull=True).update(text=text)
        if as_completion and not Completion.objects.filter(demonstration=demonstration, text=text).exists():
            Completion.objects.create(
                prompt=prompt, text=text, source=Completion.Source.DEMONSTRATION, demonstration=demonstration
            )
    return demonstration


def task_create_from(*, prompt: Prompt, completion_ids: Sequence[int], shuffle_seed: int | None = None) -> RankingTask:
    """A ranking task from K chosen completions of a prompt (model outputs, imports, demonstrations)."""
    project = prompt.project
    completions = list(Completion.objects.filter(prompt=prompt, pk__in=list(completion_ids)))
    if len(completions) != project.completions_per_task:
        raise ServiceError(
            f"pick exactly {project.completions_per_task} completions (K of this project); "
            f"you picked {len(completions)}",
            field="completions",
        )
    return task_create(project=project, prompt=prompt, completions=completions, shuffle_seed=shuffle_seed)
