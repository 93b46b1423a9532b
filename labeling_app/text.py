"""Rendering user-written Markdown (project instructions) to HTML that is safe to show."""
from __future__ import annotations

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

_TAGS = {"p", "br", "strong", "em", "b", "i", "code", "pre", "blockquote", "ul", "ol", "li", "a",
         "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td"}


def markdown_to_safe_html(text: str) -> SafeString:
    """Markdown → HTML, then nh3 keeps only harmless tags (no script, no on* attributes, no javascript: links)."""
    if not text:
        return mark_safe("")
    html = markdown.markdown(text, extensions=["sane_lists"], output_format="html")
    clean = nh3.clean(html, tags=_TAGS, attributes={"a": {"href", "title"}}, url_schemes={"http", "https", "mailto"},
                      link_rel="noopener noreferrer nofollow")
    return mark_safe(clean)  # noqa: S308 -- sanitised by nh3 just above
