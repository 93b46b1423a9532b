"""Dataset exports as streamed JSON lines: pairwise preferences, grouped rankings, SFT and KTO-style labels.

Every format is a generator of dicts (`<format>_records(...)`) over `iter_label_rows` or a
`.iterator(chunk_size=...)` queryset, so an export never holds more than one chunk in memory;
`export_lines` turns one into JSONL text for a download or a file.

Chat prompts are written as message lists and their answers as one-message assistant lists,
which is TRL's "conversational" form; plain prompts and answers are strings. A project that mixes
both needs `LabelFilters(all_chat=True)` (`--chat`) for datasets to read the file: Arrow wants one
type per column.

Check answers are read through each check's stored polarity (`CheckQuestion.problem_answer`): an
answer equal to it flags a problem ("yes" to "toxic", "no" to "satisfies the constraints"). The
grouped export writes the flagged keys per completion next to the raw answers (`problems`).

KTO label (`kto_records`): a completion is *desirable* (label true) when none of its serious checks
(`CheckQuestion.serious`) flags a problem, *undesirable* (false) otherwise. Mild checks (by default
"expresses opinion" and "moral judgment") do not decide the label. Completions with no serious
check answered (e.g. imported labels) are left out.
"""
from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Callable, Iterator, Sequence

from django.db.models import Q

from labeling_app.models import CheckQuestion, Demonstration
from labeling_app.selectors.labels import (
    CHUNK_SIZE,
    DateRange,
    DayBound,
    LabelFilters,
    LabelRow,
    iter_label_rows,
    prompt_value,
)

FORMATS = ("pairwise", "grouped", "sft", "kto")

# (project id, check key) -> (the answer that flags a problem, whether the check is serious)
CheckMeanings = dict[tuple[int, str], tuple[bool, bool]]


def check_meanings(project_ids: Sequence[int]) -> CheckMeanings:
    """How to read the check answers of the given projects: each check's polarity and severity, as stored."""
    rows = CheckQuestion.objects.filter(project_id__in=list(project_ids)).values_list(
        "project_id", "key", "problem_answer", "serious")
    return {(project_id, key): (problem_answer, serious) for project_id, key, problem_answer, serious in rows}


def flagged_checks(row: LabelRow, pos: int, meanings: CheckMeanings, *, serious_only: bool = False) -> list[str]:
    """The keys of the checks whose answer for completion `pos` of `row` flags a problem, sorted."""
    flagged = []
    for key, answers in row.checks.items():
        problem_answer, serious = meanings[(row.project_id, key)]
        if answers[pos] is not None and answers[pos] == problem_answer and (serious or not serious_only):
            flagged.append(key)
    return sorted(flagged)


def _answer(row: LabelRow, text: str) -> str | list:
    return [{"role": "assistant", "content": text}] if row.is_chat else text


def pairwise_records(filters: LabelFilters) -> Iterator[dict]:
    """One record per ordered pair of a label's completions (ties left out), best first as `chosen`."""
    for row in iter_label_rows(filters):
        order = sorted(range(len(row.ranks)), key=lambda i: (row.ranks[i], i))
        for a_pos, i in enumerate(order):
            for j in order[a_pos + 1:]:
                if row.ranks[i] == row.ranks[j]:
                    continue
                yield {
                    "prompt": row.prompt, "chosen": _answer(row, row.completions[i]),
                    "rejected": _answer(row, row.completions[j]),
                    "annotation_id": row.annotation_id, "labeler_id": row.labeler_id, "labeler": row.labeler,
                    "chosen_rating": row.ratings[i], "rejected_rating": row.ratings[j],
                    "prompt_id": row.prompt_id, "task_id": row.task_id,
                }


def grouped_records(filters: LabelFilters) -> Iterator[dict]:
    """One record per label: all K completions in the task's order with their ranks, ratings and check answers,
    and per completion the keys of the checks whose answer flags a problem (`problems`, read with each check's polarity)."""
    meanings = check_meanings(filters.project_ids)
    for row in iter_label_rows(filters):
        yield {
            "prompt": row.prompt, "completions": row.completions, "ranks": row.ranks, "ratings": row.ratings,
            "checks": row.checks, "problems": [flagged_checks(row, pos, meanings) for pos in range(len(row.completions))],
            "annotation_id": row.annotation_id, "labeler_id": row.labeler_id,
            "labeler": row.labeler, "prompt_id": row.prompt_id, "task_id": row.task_id,
            "submitted_at": row.submitted_at.isoformat() if row.submitted_at else None,
        }


def kto_records(filters: LabelFilters) -> Iterator[dict]:
    """One record per completion with at least one serious check answered: label = no serious check flags a problem."""
    meanings = check_meanings(filters.project_ids)
    for row in iter_label_rows(filters):
        for pos, text in enumerate(row.completions):
            if not any(answers[pos] is not None and meanings[(row.project_id, key)][1] for key, answers in row.checks.items()):
                continue
            failed = flagged_checks(row, pos, meanings, serious_only=True)
            yield {
                "prompt": row.prompt, "completion": _answer(row, text), "label": not failed,
                "failed_checks": failed, "rating": row.ratings[pos], "rank": row.ranks[pos],
                "annotation_id": row.annotation_id, "labeler_id": row.labeler_id, "labeler": row.labeler,
                "prompt_id": row.prompt_id,
            }


def demonstration_queryset(*, project_ids: Sequence[int], date_from: DayBound = None, date_to: DayBound = None,
                           author: str | None = None):
    q = Q(prompt__project_id__in=list(project_ids)) & DateRange.parse(date_from, date_to).q("created_at")
    if author:
        q &= Q(author__username=author)
    return Demonstration.objects.filter(q).select_related("prompt", "author").order_by("id")


def sft_records(filters: LabelFilters) -> Iterator[dict]:
    """Demonstrations as prompt-completion pairs (labeler filter = the demonstration's author)."""
    qs = demonstration_queryset(project_ids=filters.project_ids, date_from=filters.date_from, date_to=filters.date_to,
                                author=filters.labeler)
    for demo in qs.iterator(chunk_size=CHUNK_SIZE):
        prompt = demo.prompt
        chat = bool(prompt.messages) or filters.all_chat
        yield {
            "prompt": prompt_value(prompt.text, prompt.messages, filters.all_chat),
            "completion": [{"role": "assistant", "content": demo.text}] if chat else demo.text,
            "demonstration_id": demo.pk, "prompt_id": prompt.pk,
            "author": demo.author.username if demo.author_id else demo.source,
        }


RECORDS: dict[str, Callable[[LabelFilters], Iterator[dict]]] = {
    "pairwise": pairwise_records, "grouped": grouped_records, "sft": sft_records, "kto": kto_records,
}


def export_records(fmt: str, filters: LabelFilters) -> Iterator[dict]:
    if fmt not in RECORDS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return RECORDS[fmt](filters)


def export_lines(fmt: str, filters: LabelFilters) -> Iterator[str]:
    """JSONL text, one line per record, streamed."""
    for record in export_records(fmt, filters):
        yield json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(value: Any):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
