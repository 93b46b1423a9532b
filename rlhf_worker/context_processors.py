"""Template context on every page: for an admin, the notice of their jobs that ended since they last dismissed it."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from labeling_app.roles import ADMIN, has_role


def job_notices(request) -> dict:
    """`job_notices` (selectors.JobNotices), read only if the page shows it; nothing for other roles."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not has_role(user, ADMIN):
        return {}
    from rlhf_worker.selectors import job_notices as select_notices

    return {"job_notices": SimpleLazyObject(lambda: select_notices(user=user))}
