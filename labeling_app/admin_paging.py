"""A paginator for the Django admin lists of the big tables: an estimated row count where an exact one is slow.

The admin's paginator runs `SELECT count(*)` over the whole table on every list page; with a million
completions that is most of the page's time (benchmarks/pages_at_scale.py). For an unfiltered list of
a table PostgreSQL estimates to hold more than `ADMIN_EXACT_COUNT_LIMIT` rows, the count is taken from
the planner's statistics (`pg_class.reltuples`, kept by ANALYZE/autovacuum) instead; a filtered or
searched list, or a small table, is counted exactly. The count shown and the number of pages then come
from the estimate: the last page may come up short, or a few rows lie past it, until the statistics
catch up.
"""

from __future__ import annotations

from django.conf import settings
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property


def estimated_rows(model, using: str = "default") -> int | None:
    """The planner's estimate of the model's table size; None before the table was ever analysed."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row and row[0] >= 0 else None


class EstimatedCountPaginator(Paginator):
    estimated = False

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        query = getattr(qs, "query", None)
        if query is not None and not query.where and not query.distinct and not query.combinator:
            estimate = estimated_rows(qs.model, qs.db)
            if estimate is not None and estimate > settings.ADMIN_EXACT_COUNT_LIMIT:
                self.estimated = True
                return estimate
        return super().count


class EstimatedCountAdmin:
    """Mixin for a ModelAdmin of a big table: no second full count, and an estimated first one."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
