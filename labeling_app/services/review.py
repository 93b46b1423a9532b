"""Researchers' review of submitted labels: accept, or reject with a note the labeler reads."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, ReviewState
from labeling_app.validation import NUL, NUL_MESSAGE

MAX_REVIEW_NOTE_CHARS = 2_000
DECISIONS = {"accept": ReviewState.ACCEPTED, "reject": ReviewState.REJECTED}


def annotation_review(
    *, annotation: Annotation, reviewer, decision: str, note: str = "", seen_revision: int | None = None
) -> Annotation:
    """Record a researcher's decision on a submitted label; the latest decision counts (re-review is allowed).

    `decision` is "accept" or "reject"; a rejection needs a `note` (what is wrong, for the labeler), an
    acceptance may have one. Rejected labels are left out of training data and exports
    (`selectors.labels.usable_labels_q`); the labeler sees the state and the note on "My labels" and may
    revise a label until it is accepted (`services.annotations.annotation_revise`). `seen_revision` is the
    label's `revision_count` the reviewer looked at: a label revised since then is refused (409), so a decision
    is never recorded on a version nobody reviewed.
    """
    state = DECISIONS.get(decision)
    if state is None:
        raise ServiceError(f"Choose accept or reject, not {decision!r}.", field="decision")
    note = note.strip() if isinstance(note, str) else ""
    if state == ReviewState.REJECTED and not note:
        raise ServiceError("Say in a note what is wrong with this label: the labeler reads it to fix it.", field="note")
    if NUL in note:
        raise ServiceError(f"The note {NUL_MESSAGE}.", field="note")
    if len(note) > MAX_REVIEW_NOTE_CHARS:
        raise ServiceError(
            f"Shorten the note to at most {MAX_REVIEW_NOTE_CHARS} characters (it has {len(note)}).", field="note"
        )
    with transaction.atomic():
        locked = Annotation.objects.select_for_update().get(pk=annotation.pk)
        if locked.status != Annotation.Status.SUBMITTED:
            raise ServiceError("Only a submitted label can be reviewed.", status=409)
        if seen_revision is not None and locked.revision_count != seen_revision:
            raise ServiceError(
                "The labeler revised this label after you opened the page; look at the new version and decide again.",
                status=409,
            )
        locked.review_state, locked.review_note = state, note
        locked.reviewed_by, locked.reviewed_at = reviewer, timezone.now()
        locked.save(update_fields=["review_state", "review_note", "reviewed_by", "reviewed_at", "updated_at"])
    return locked
