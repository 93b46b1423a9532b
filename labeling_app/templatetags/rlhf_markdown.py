"""`{% load rlhf_markdown %}{{ text|markdown }}`: Markdown rendered and sanitised (see labeling_app.markdown)."""
from django import template

from labeling_app.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str):
    return render_markdown(text)


@register.filter(name="percent")
def percent(value, digits: int = 1):
    """0.726 -> '72.6%'; None -> '—'."""
    return "—" if value is None else f"{value * 100:.{digits}f}%"


@register.filter(name="num")
def num(value, digits: int = 3):
    """A statistic with fixed digits; None (undefined) -> '—'."""
    return "—" if value is None else f"{value:.{digits}f}"
