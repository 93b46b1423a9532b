"""The autopilot pages: an admin turns it on, changes N, pauses and resumes; bad input is refused with what to fix;
each cycle is one pipeline row with its steps' jobs, states and failure reason."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from rlhf_worker.jobs.runner import _finish
from rlhf_worker.models import Autopilot, PipelineRun, TrainingJob
from rlhf_worker.services.autopilot import pipeline_start
from tests.rlhf_worker.autopilot_fixtures import labelers, project, rank, reward_version  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


SETTINGS = {
    "every_n_rankings": "5",
    "preset_reward": "Defaults",
    "preset_score": "Defaults",
    "preset_ppo": "Defaults",
    "preset_generate": "Quick CPU demo",
}


def test_an_admin_turns_it_on_changes_n_pauses_and_resumes(project, admin_user):  # noqa: F811
    admin = client_for(admin_user)
    url = reverse("jobs:autopilot_project", kwargs={"pk": project.pk})
    page = admin.get(url).content.decode()
    assert "Turn the autopilot on" in page and 'id="autopilot-status">off<' in page

    response = admin.post(url, {**SETTINGS, "auto_promote": "on"})
    assert response.status_code == 302
    autopilot = Autopilot.objects.get(project=project)
    assert (autopilot.every_n_rankings, autopilot.include_ppo, autopilot.auto_promote) == (5, False, True)
    assert autopilot.presets["generate"] == "Quick CPU demo" and autopilot.created_by == admin_user
    page = admin.get(url).content.decode()
    assert 'id="new-rankings">0 / 5<' in page and "Autopilot turned on" in page

    assert admin.post(url, {**SETTINGS, "every_n_rankings": "12", "include_ppo": "on"}).status_code == 302
    autopilot.refresh_from_db()
    assert (autopilot.every_n_rankings, autopilot.include_ppo, autopilot.auto_promote) == (12, True, False)

    assert admin.post(reverse("jobs:autopilot_pause", kwargs={"pk": project.pk})).status_code == 302
    autopilot.refresh_from_db()
    assert autopilot.paused
    page = admin.get(url).content.decode()
    assert 'id="autopilot-status">paused<' in page and 'id="resume"' in page and 'id="pause"' not in page
    assert admin.post(reverse("jobs:autopilot_resume", kwargs={"pk": project.pk})).status_code == 302
    autopilot.refresh_from_db()
    assert not autopilot.paused


@pytest.mark.parametrize(
    "data, field, says",
    [
        ({"every_n_rankings": "0"}, "every_n_rankings", "greater than or equal to 1"),
        ({"every_n_rankings": "many"}, "every_n_rankings", "Enter a whole number"),
        ({"every_n_rankings": ""}, "every_n_rankings", "This field is required"),
        ({"preset_reward": "Gone preset"}, "preset_reward", "Select a valid choice"),
    ],
)
def test_bad_settings_are_refused_beside_the_field(project, admin_user, data, field, says):  # noqa: F811
    response = client_for(admin_user).post(
        reverse("jobs:autopilot_project", kwargs={"pk": project.pk}), {**SETTINGS, **data}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert f'id="error-{field}"' in page and says in page
    assert not Autopilot.objects.exists()


def test_a_researcher_sees_the_pipelines_but_no_settings_form(project, researcher, admin_user):  # noqa: F811
    client_for(admin_user).post(reverse("jobs:autopilot_project", kwargs={"pk": project.pk}), SETTINGS)
    page = client_for(researcher).get(reverse("jobs:autopilot_project", kwargs={"pk": project.pk})).content.decode()
    assert 'id="autopilot-form"' not in page and 'id="pipelines"' in page
    assert (
        client_for(researcher)
        .post(reverse("jobs:autopilot_project", kwargs={"pk": project.pk}), {**SETTINGS, "every_n_rankings": "1"})
        .status_code
        == 403
    )
    assert Autopilot.objects.get().every_n_rankings == 5


def test_each_cycle_is_one_pipeline_row_with_its_jobs_and_failure_reason(project, labelers, admin_user):  # noqa: F811
    admin = client_for(admin_user)
    url = reverse("jobs:autopilot_project", kwargs={"pk": project.pk})
    admin.post(url, {**SETTINGS, "every_n_rankings": "1"})
    autopilot = Autopilot.objects.get()
    rank(project, labelers, 1)
    first = pipeline_start(autopilot=autopilot)
    reward_job = first.steps.get().job
    _finish(TrainingJob.objects.get(pk=reward_job.pk), "succeeded", version=reward_version(reward_job, 0.8))
    score_job = first.steps.get(position=2).job
    _finish(TrainingJob.objects.get(pk=score_job.pk), "failed", error="RuntimeError: CUDA out of memory\n\ntrace")

    response = admin.post(reverse("jobs:autopilot_run", kwargs={"pk": project.pk}))  # started by hand
    assert response.status_code == 302
    second = PipelineRun.objects.exclude(pk=first.pk).get()
    assert second.started_by == admin_user

    page = admin.get(url).content.decode()
    row = page[page.index(f'id="pipeline-{first.pk}"') :]  # the newest cycle comes first
    assert f'href="/jobs/{reward_job.pk}/"' in row and f'href="/jobs/{score_job.pk}/"' in row
    assert f"Score completions job #{score_job.pk} failed: RuntimeError: CUDA out of memory" in page
    assert 'data-kind="generate" data-status="waiting"' in page and "Generate candidates: not run" in page
    assert f'id="pipeline-{second.pk}" data-status="running"' in page and f"by {admin_user.username}" in page
    # a second start by hand while one runs is refused, saying why
    admin.post(reverse("jobs:autopilot_run", kwargs={"pk": project.pk}))
    assert PipelineRun.objects.count() == 2
    assert "still running" in admin.get(url).content.decode()

    job_page = admin.get(reverse("jobs:detail", kwargs={"pk": score_job.pk})).content.decode()
    assert (
        f'Step 2 of <a href="{url}#pipeline-{first.pk}">autopilot cycle #{first.pk}</a> of {project.name}' in job_page
    )
    overview = admin.get(reverse("jobs:autopilot")).content.decode()
    assert f'data-project="{project.pk}"' in overview and f"#{second.pk}" in overview
