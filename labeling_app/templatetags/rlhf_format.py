"""`{% load rlhf_format %}`: the numbers filters every page uses (label quality and the training dashboard alike)."""

from __future__ import annotations

from django import template

register = template.Library()

MISSING = "—"


@register.filter
def percent(fraction, digits: int = 1) -> str:
    """A fraction as a percentage: 0.726 -> '72.6%', `|percent:0` -> '73%'; None (undefined) -> '—'."""
    if fraction is None or fraction == "":
        return MISSING
    return f"{100 * float(fraction):.{int(digits)}f}%"


@register.filter
def num(value, digits: int = 3) -> str:
    """A statistic or metric to `digits` significant digits: 0.77777 -> '0.778', 0.05671 -> '0.0567';
    None (undefined) -> '—'; anything that is not a number is shown as it is."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{int(digits)}g}"
