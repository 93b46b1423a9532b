"""`{% load dashboard %}`: filters of the training dashboard's own (percentages and numbers: `rlhf_format`)."""

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
def job_duration(job) -> str:
    """How long a job ran (or has been running); '—' if it never started."""
    return duration(job.duration_seconds())


@register.filter
def job_eta(job) -> str:
    """Time left at the pace so far, for a running job with some progress; '—' otherwise."""
    return duration(job.eta_from_progress())
