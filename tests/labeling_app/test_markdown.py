"""Project instructions: one sanitiser, so labelers and researchers see the same HTML, and hostile input is cleaned."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from labeling_app.markdown import render_markdown

INSTRUCTIONS = """# How to rank

Prefer **truthful** answers; see [the guide](https://example.com/guide).

| Case | Rank |
| --- | --- |
| truthful | first |

```
code stays code
```

- one
- two

1. first
2. second

<script>alert("x")</script><style>body{display:none}</style>
<iframe src="https://evil.example/"></iframe>
<img src="https://example.com/a.png" alt="example" onerror="alert(1)">
<p onclick="alert(2)" class="x" style="color:red">handlers go</p>
[bad](javascript:alert(3))
"""


def test_safe_markdown_is_kept_and_hostile_markup_is_removed():
    html = str(render_markdown(INSTRUCTIONS))
    assert "<h1>How to rank</h1>" in html and "<strong>truthful</strong>" in html
    assert '<a href="https://example.com/guide" rel="noopener noreferrer nofollow">the guide</a>' in html
    assert "<table>" in html and "<th>Case</th>" in html and "<td>first</td>" in html
    assert "<pre><code>code stays code\n</code></pre>" in html
    assert "<ul>" in html and "<ol>" in html and "<li>second</li>" in html
    assert '<img src="https://example.com/a.png" alt="example">' in html
    for hostile in (
        "<script",
        "alert(",
        "<style",
        "display:none",
        "<iframe",
        "evil.example",
        "onerror",
        "onclick",
        "class=",
        "style=",
        "javascript:",
    ):
        assert hostile not in html, hostile
    assert render_markdown("") == "" and render_markdown(None) == ""


def _between(page: str, opening: str) -> str:
    match = re.search(re.escape(opening) + r"(.*?)</div>\s*</(?:details|div)>", page, re.S)
    assert match, f"{opening} not in the page"
    return match.group(1)


def test_labelers_and_researchers_see_the_same_html(demo_project, labeler, researcher):
    demo_project.instructions = INSTRUCTIONS
    demo_project.save()
    lab = Client()
    lab.force_login(labeler)
    task_url = lab.post(reverse("labeler:next", args=[demo_project.pk]))["Location"]
    for_labeler = _between(lab.get(task_url).content.decode(), '<div class="lt-prose">')
    res = Client()
    res.force_login(researcher)
    for_researcher = _between(
        res.get(reverse("researcher:project_detail", args=[demo_project.pk])).content.decode(), '<div class="md">'
    )
    assert for_labeler == for_researcher == str(render_markdown(INSTRUCTIONS))
