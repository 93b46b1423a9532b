"""Walks every URL of the app as anonymous, labeler, researcher and admin and checks the status code.

Every named URL must have a row here: a new page without one fails `test_every_url_is_in_the_matrix`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.conftest import make_user

ROLES = ("anon", "labeler", "researcher", "admin")


@dataclass
class Row:
    expect: dict[str, int]
    kwargs: Callable[["World"], dict] = lambda w: {}
    method: str = "get"
    data: dict = field(default_factory=dict)


def page(labeler: int, researcher: int, admin: int, anon: int = 302) -> dict[str, int]:
    return {"anon": anon, "labeler": labeler, "researcher": researcher, "admin": admin}


LABELER_ONLY = page(200, 403, 403)
RESEARCHER_UP = page(403, 200, 200)
ADMIN_ONLY = page(403, 403, 200)
API_ANY_USER = page(200, 200, 200, anon=401)

# url name -> expected status per role. Areas add their rows below.
MATRIX: dict[str, Row] = {
    "landing": Row(page(302, 302, 302)),
    "login": Row({"anon": 200, "labeler": 302, "researcher": 302, "admin": 302}),
    "logout": Row(page(302, 302, 302), method="post"),
    "labeler:home": Row(LABELER_ONLY),
    "researcher:project_list": Row(RESEARCHER_UP),
    "jobs:list": Row(RESEARCHER_UP),
    "api:schema": Row(API_ANY_USER),
    "api:docs": Row(API_ANY_USER),
}


@dataclass
class World:
    """Objects the parametrised URLs point at."""

    project: object
    task: object


def url_names(resolver=None, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":  # Django's own admin site: staff-only by Django
                continue
            ns = f"{prefix}{entry.namespace}:" if entry.namespace else prefix
            names |= url_names(entry, ns)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(prefix + entry.name)
    return names


def test_every_url_is_in_the_matrix():
    missing = url_names() - set(MATRIX)
    stale = set(MATRIX) - url_names()
    assert not missing, f"add rows to MATRIX for: {sorted(missing)}"
    assert not stale, f"MATRIX names URLs that no longer exist: {sorted(stale)}"


@pytest.fixture
def world(demo_project):
    return World(project=demo_project, task=demo_project.tasks.first())


@pytest.fixture
def clients(client, django_user_model, db):
    from django.test import Client

    by_role = {"anon": Client()}
    for role in ("labeler", "researcher", "admin"):
        c = Client()
        c.force_login(make_user(f"matrix-{role}", role))
        by_role[role] = c
    return by_role


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_role_matrix(name, world, clients):
    row = MATRIX[name]
    url = reverse(name, kwargs=row.kwargs(world))
    got = {}
    for role in ROLES:
        response = getattr(clients[role], row.method)(url, row.data)
        got[role] = response.status_code
    assert got == row.expect, f"{name} ({url})"
