"""`{% load rlhf_poll %}`: the one way a page refreshes a live part of itself (htmx polling).

A live part is an element with an id whose template is its own fragment. While the thing it shows
runs, the element carries `{% poll url "#its-id" every_ms %}`: every `every_ms` htmx fetches `url`
and replaces the element with the element of that id in the answer, so `url` may answer the
fragment alone or the whole page. Once finished, the template leaves the tag out
(`{% if running %}{% poll ... %}{% endif %}`): the last swap brings an element that no longer polls.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag
def poll(url: str, selector: str, every_ms: int) -> SafeString:
    """The htmx attributes that make an element refresh itself from `url` every `every_ms` milliseconds."""
    assert selector.startswith("#"), f"poll needs the element's own id as '#id', got {selector!r}"
    return format_html(
        'hx-get="{}" hx-select="{}" hx-target="this" hx-swap="outerHTML" hx-trigger="every {}ms"',
        url,
        selector,
        int(every_ms),
    )
