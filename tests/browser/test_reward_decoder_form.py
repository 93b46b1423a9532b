"""Browser: an admin starting a reward job finds the policy versions to start a decoder reward model from, and is
told what to choose when asking for a decoder with the (encoder) default backbone."""

from __future__ import annotations

import pytest

from rlhf_worker.models import ModelVersion, TrainingJob
from tests.conftest import ARTIFACTS, login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"reward-decoder-{name}.png"), full_page=True)


def test_reward_form_offers_policy_versions_and_refuses_a_decoder_without_one(
    page, live_server, admin_user, training_queue, demo_project
):
    policy = ModelVersion.objects.create(kind="policy", name="sft of week 3", path="/models/sft-3")

    login(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/jobs/start/reward/")
    page.wait_for_selector("form.config-form")
    field = page.inner_text("#field-init_policy_version_id")
    assert "Start from a policy version" in field and "InstructGPT" in field
    options = page.eval_on_selector_all("#id_init_policy_version_id option", "els => els.map(e => e.textContent)")
    assert options == ["None — use the backbone setting", f"#{policy.pk} sft of week 3"]
    shot(page, "1-form")

    page.click("#advanced-settings > summary")
    page.select_option("#id_backbone_kind", "decoder")
    page.click("#start-job")
    page.wait_for_selector("#error-summary")
    summary = page.inner_text("#error-summary")
    assert "Nothing was started" in summary and "is an encoder, not a decoder" in summary
    assert "choose a policy" in page.inner_text("#field-backbone_kind")
    shot(page, "2-refused-decoder-with-encoder-backbone")
    assert not TrainingJob.objects.exists()
