"""Browser: an admin starting a job while Redis is down sees why on the form, and the workers page says whether the sweep runs."""

from __future__ import annotations

import pytest

from rlhf_worker.models import TrainingJob
from tests.conftest import ARTIFACTS, login
from tests.faults.conftest import private_broker, private_redis  # noqa: F401
from tests.faults.test_broker_outage import steps_kind  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"broker-outage-{name}.png"), full_page=True)


def test_a_start_during_an_outage_shows_the_reason_on_the_form_and_the_workers_page_flags_a_missing_sweep(
    page, live_server, private_broker, steps_kind, admin_user
):  # noqa: F811
    from django.core.cache import cache

    from rlhf_worker.selectors import SWEEP_CACHE_KEY

    cache.delete(SWEEP_CACHE_KEY)
    login(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/jobs/start/reward/")
    page.wait_for_selector("form.config-form")
    page.fill("#id_steps", "7")
    private_broker.stop()
    page.click("form.config-form button[type=submit]")
    page.wait_for_selector("text=The job queue (Redis) cannot be reached")
    assert page.input_value("#id_steps") == "7"
    shot(page, "1-start-refused")
    assert not TrainingJob.objects.exists()

    page.goto(f"{live_server.url}/jobs/workers/")
    page.wait_for_selector("#sweep-stale")
    assert "No job sweep has run yet" in page.inner_text("#sweep-stale")
    shot(page, "2-workers-no-sweep")
