"""`{% load rlhf_markdown %}{{ text|markdown }}`: Markdown rendered and sanitised (see labeling_app.markdown)."""

from django import template

from labeling_app.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str):
    return render_markdown(text)
