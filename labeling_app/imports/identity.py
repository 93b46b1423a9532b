"""Identity keys of imported rows: two lines that would write the same row get the same key, so a re-import reuses or skips it.

The keys live in `import_key` columns with partial unique indexes (see labeling_app.models), so
identity holds under concurrent imports too. Changing a key's recipe changes what counts as "the
same", so these functions are fixed: the migration that back-filled existing rows uses them as well.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def completion_key(text: str, model_name: str) -> str:
    """An imported completion: its exact text and the model that wrote it (under one prompt)."""
    return _sha256(f"{len(model_name)}:{model_name}\n{text}")


def demonstration_key(text: str) -> str:
    """A demonstration: its exact text (under one prompt). PostgreSQL computes the same value as
    encode(sha256(convert_to(text, 'UTF8')), 'hex'), which the import uses for demonstrations written by hand."""
    return _sha256(text)


def task_key(completion_ids: Iterable[int], *, labels: bool) -> str:
    """A ranking task: the set of its completions (order does not matter) and what it is for.

    A task holding imported labels is closed to labelers, an open task waits for them: the same
    completions may have one of each, never two of either.
    """
    purpose = "labels" if labels else "queue"
    return _sha256(f"{purpose}:" + ",".join(str(i) for i in sorted(completion_ids)))


def label_key(ratings: Iterable[tuple[int, int, int | None, dict[str, bool] | None]]) -> str:
    """An imported label: per completion id its rank, rating and check answers (under one task and import source)."""
    rows = sorted([cid, rank, likert, sorted((checks or {}).items())] for cid, rank, likert, checks in ratings)
    return _sha256(json.dumps(rows, separators=(",", ":")))
