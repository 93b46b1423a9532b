"""Template filters for the training dashboard: durations, percentages, metric lookups."""
from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """93 -> '1 min 33 s'; None -> '—'."""
    if seconds is None or seconds == "":
        return "—"
    seconds = max(0, int(round(float(seconds))))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def percent(fraction) -> str:
    if fraction is None:
        return "—"
    return f"{100 * float(fraction):.0f}%"


@register.filter
def num(value, digits: int = 3) -> str:
    """A metric for a table: 3 significant digits, '—' when missing."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{int(digits)}g}"


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)
