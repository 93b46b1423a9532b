"""Projects the import tests share: K=2 (pairwise) and K=4 (grouped rankings, overlap 2)."""

from __future__ import annotations

import pytest

from labeling_app.services.projects import project_create


@pytest.fixture
def k2(db, researcher):
    return project_create(name="Pairs", user=researcher, completions_per_task=2, overlap=1)


@pytest.fixture
def k4(db, researcher):
    return project_create(name="Fours", user=researcher, completions_per_task=4, overlap=2)
