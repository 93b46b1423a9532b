"""Exit 0 when the scheduled job sweep ran lately, 1 when not: compose's healthcheck of the scheduler (Celery beat)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rlhf_worker.selectors import jobs_sweep_age


class Command(BaseCommand):
    help = (
        "Checks that the job sweep scheduled by Celery beat ran within the last --max-age seconds "
        "(default: three sweep intervals plus a minute); it also needs a worker on the default queue."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--max-age", type=float, default=None, help="seconds (default 3 x JOB_SWEEP_SECONDS + 60)")

    def handle(self, *args, max_age: float | None = None, **options) -> None:
        limit = max_age if max_age is not None else 3 * settings.JOB_SWEEP_SECONDS + 60
        age = jobs_sweep_age()
        if age is None:
            raise CommandError(
                "no job sweep has run yet (or Redis cannot be reached): is `celery -A config beat` running, "
                "and a worker on the default queue?"
            )
        if age > limit:
            raise CommandError(
                f"the last job sweep ran {age:.0f} s ago (limit {limit:.0f} s): is `celery -A config beat` "
                "running, and a worker on the default queue?"
            )
        self.stdout.write(f"the last job sweep ran {age:.0f} s ago")
