"""Promoting model versions (one per kind, swapped atomically) and the plotly asset served from the wheel."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.selectors import promoted_policy
from rlhf_worker.services.models import model_version_promote
from rlhf_worker.staticfiles import PLOTLY_STATIC_PATH, plotly_package_data


@pytest.mark.django_db
def test_promote_swaps_the_promoted_policy_and_leaves_reward_models_alone(admin_user):
    a = ModelVersion.objects.create(kind="policy", name="sft-1", path="/a")
    b = ModelVersion.objects.create(kind="policy", name="ppo-1", path="/b", parent=a)
    rm = ModelVersion.objects.create(kind="reward", name="rm-1", path="/r", is_promoted=True)
    assert promoted_policy() is None
    model_version_promote(version=a, user=admin_user)
    assert promoted_policy() == a
    model_version_promote(version=b, user=admin_user)
    assert promoted_policy() == b
    assert list(ModelVersion.objects.filter(is_promoted=True).order_by("pk")) == [b, rm]
    model_version_promote(version=b, user=admin_user)  # promoting the promoted one is a no-op
    assert promoted_policy() == b


@pytest.mark.django_db(transaction=True)
def test_concurrent_promotions_leave_exactly_one_promoted_policy(admin_user):
    versions = [ModelVersion.objects.create(kind="policy", name=f"p{i}", path=f"/p{i}") for i in range(4)]
    model_version_promote(version=versions[0], user=admin_user)
    barrier, errors = threading.Barrier(3), []

    def promote(v):
        try:
            barrier.wait()
            for _ in range(5):
                model_version_promote(version=v, user=admin_user)
        except Exception as exc:  # an IntegrityError here is the bug this test is for
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert ModelVersion.objects.filter(kind="policy", is_promoted=True).count() == 1


@pytest.mark.django_db
def test_promote_through_the_page_is_for_admins_only(researcher, admin_user):
    v = ModelVersion.objects.create(kind="policy", name="sft-1", path="/a")
    res = Client()
    res.force_login(researcher)
    html = res.get(reverse("jobs:models")).content.decode()
    assert "sft-1" in html and f'data-promote="{v.pk}"' not in html
    assert res.post(reverse("jobs:promote", kwargs={"pk": v.pk})).status_code == 403
    v.refresh_from_db()
    assert not v.is_promoted
    adm = Client()
    adm.force_login(admin_user)
    assert f'data-promote="{v.pk}"' in adm.get(reverse("jobs:models")).content.decode()
    response = adm.post(reverse("jobs:promote", kwargs={"pk": v.pk}), {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == reverse("jobs:models")
    v.refresh_from_db()
    assert v.is_promoted


@pytest.mark.django_db
def test_versions_page_shows_lineage_and_metrics_side_by_side(researcher):
    job = TrainingJob.objects.create(kind="reward", status="succeeded")
    rm = ModelVersion.objects.create(
        kind="reward",
        name="rm-7",
        path="/r",
        training_job=job,
        metrics={"eval/accuracy": 0.6812, "eval/labeler_agreement": 0.7344},
        data_snapshot={"project_ids": [3], "rankings": 120, "annotation_ids": [5, 6, 7], "resumed_from_job": None},
    )
    base = ModelVersion.objects.create(kind="policy", name="sft-2", path="/s")
    ModelVersion.objects.create(
        kind="policy",
        name="ppo-9",
        path="/p",
        parent=base,
        reward_model=rm,
        metrics={"objective/scores": 1.234, "objective/kl": 0.0567},
    )
    c = Client()
    c.force_login(researcher)
    html = c.get(reverse("jobs:models")).content.decode()
    assert "0.681" in html and "0.734" in html and "projects #3; rankings: 120; 3 annotations" in html
    assert "1.23" in html and "0.0567" in html and f"#{base.pk} sft-2" in html and "rm-7" in html
    assert 'id="reward-chart"' in html and 'id="policy-chart"' in html and "vendor/plotly/plotly.min.js" in html
    detail = c.get(reverse("jobs:model_detail", kwargs={"pk": rm.pk})).content.decode()
    assert "Policies optimised against it" in detail and "ppo-9" in detail


def test_plotly_comes_from_the_installed_wheel_not_the_repository():
    assert (plotly_package_data() / "plotly.min.js").is_file()
    repo = Path(__file__).resolve().parents[2]
    assert not list(repo.glob("static/**/plotly*.js")), "plotly must not be copied into the repository"


@pytest.mark.django_db
def test_plotly_is_served_through_whitenoise_and_finders(client):
    response = client.get("/static/" + PLOTLY_STATIC_PATH)
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"plotly.js" in body[:400] and len(body) > 1_000_000
    assert "javascript" in response["Content-Type"]


def test_collectstatic_copies_plotly_and_whitenoise_serves_it_from_static_root(settings, tmp_path):
    from django.test import RequestFactory
    from whitenoise.middleware import WhiteNoiseMiddleware

    settings.STATIC_ROOT = str(tmp_path / "static")
    call_command("collectstatic", interactive=False, verbosity=0)
    collected = tmp_path / "static" / PLOTLY_STATIC_PATH
    assert collected.is_file() and collected.stat().st_size == (plotly_package_data() / "plotly.min.js").stat().st_size
    # production mode: WhiteNoise reads STATIC_ROOT only, no finders
    settings.WHITENOISE_USE_FINDERS = False
    settings.WHITENOISE_AUTOREFRESH = False
    middleware = WhiteNoiseMiddleware(lambda request: None)
    response = middleware(RequestFactory().get("/static/" + PLOTLY_STATIC_PATH))
    assert response is not None and response.status_code == 200
