"""Rows the training jobs read: rankings for the reward model, demonstrations for SFT (streamed plain dicts)."""
from __future__ import annotations

from datetime import date, datetime
from typing import Iterator, Sequence

from labeling_app.selectors.exports import demonstration_queryset
from labeling_app.selectors.labels import CHUNK_SIZE, LabelFilters, iter_label_rows


def rankings_for_training(*, project_ids: Sequence[int], date_from: date | datetime | None = None,
                          date_to: date | datetime | None = None, include_imported: bool = True,
                          full_overlap: bool = False, only_agreeing: bool = False) -> Iterator[dict]:
    """Every submitted ranking of the projects: {annotation_id, prompt (text or chat messages),
    completions: [text, ...], ranks: [int, ...] (1 = best, ties equal), labeler (username or
    "import:<source>"), prompt_id}. Completions are in the task's order; labels with ties are kept
    (the reward model skips tied pairs)."""
    filters = LabelFilters(project_ids=project_ids, date_from=date_from, date_to=date_to,
                           include_imported=include_imported, full_overlap=full_overlap, only_agreeing=only_agreeing)
    for row in iter_label_rows(filters):
        yield {"annotation_id": row.annotation_id, "prompt": row.prompt, "completions": row.completions,
               "ranks": row.ranks, "labeler": row.labeler, "prompt_id": row.prompt_id}


def demonstrations_for_training(*, project_ids: Sequence[int], date_from: date | datetime | None = None,
                                date_to: date | datetime | None = None) -> Iterator[dict]:
    """Every demonstration of the projects: {prompt (text or chat messages), completion (text), demonstration_id, prompt_id}."""
    qs = demonstration_queryset(project_ids=project_ids, date_from=date_from, date_to=date_to)
    for demo in qs.iterator(chunk_size=CHUNK_SIZE):
        prompt = demo.prompt
        yield {"prompt": prompt.messages if prompt.messages else prompt.text, "completion": demo.text,
               "demonstration_id": demo.pk, "prompt_id": prompt.pk}
