"""The generate job records per completion whether it ended at a stop token or was cut at max_new_tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.conf import settings

from labeling_app.models import Completion, Prompt
from labeling_app.services.projects import project_create
from rlhf_worker.jobs import generate as generate_job
from rlhf_worker.models import ModelVersion
from rlhf_worker.training.generation import GenerationConfig, generate_stream
from rlhf_worker.training.policy_models import load_policy, save_tiny_policy, tiny_policy

torch.set_num_threads(1)
PROMPTS = ["hi", "tell me a long story about cats", "2+2?"]
# A random tiny model at a high temperature: some samples draw a stop token within 12 tokens, others run on.
HOT = {"temperature": 3.0, "top_p": 1.0, "max_new_tokens": 12, "seed": 5}


def test_stream_says_which_samples_stopped_and_which_ran_to_the_limit():
    model, tok = tiny_policy(seed=0)
    cfg = GenerationConfig(num_samples=3, **HOT)
    batches = list(generate_stream(model, tok, PROMPTS * 3, cfg, batch_size=6))
    flags = [s for b in batches for row in b.stopped for s in row]
    assert all(len(row) == 3 for b in batches for row in b.stopped)
    assert [len(b.stopped) for b in batches] == [len(b.prompt_indices) for b in batches]
    # Two whole prompts per batch: the per-sample flags add up to the batch's count of samples without a stop.
    assert [sum(not s for row in b.stopped for s in row) for b in batches] == [b.finished_without_stop for b in batches]
    assert True in flags and False in flags


class _Ctx:
    def __init__(self, config):
        self.config = config

    def report(self, *args, **kwargs):
        pass

    def should_stop(self):
        return False

    def log(self, text):
        pass


@pytest.mark.django_db
def test_generate_job_stores_the_finish_reason_of_each_completion(researcher):
    version = ModelVersion.objects.create(
        kind="policy", name="tiny", path=save_tiny_policy(str(Path(settings.MODEL_STORE) / "tiny-policy"), seed=0)
    )
    project = project_create(name="Finish reasons", user=researcher, completions_per_task=3, checks=[])
    for text in PROMPTS:
        Prompt.objects.create(project=project, text=text)
    cfg = generate_job.Config(project_ids=[project.pk], policy_version_id=version.pk, batch_size=3, **HOT)
    generate_job.run(None, _Ctx(cfg))

    completions = list(Completion.objects.filter(prompt__project=project))
    assert len(completions) == 9
    assert {c.sampling["finish_reason"] for c in completions} == {"stop", "length"}
    # The flag matches the text: a cut answer is about max_new_tokens long (decoding and re-encoding may merge a
    # token or two); one that stopped is shorter.
    _, tok = load_policy(version.path, "cpu")
    for c in completions:
        n = len(tok(c.text, add_special_tokens=False).input_ids)
        assert c.cut_at_length_limit == (c.sampling["finish_reason"] == "length")
        if c.cut_at_length_limit:
            assert n >= HOT["max_new_tokens"] - 2, (c.text, n)
        else:
            assert n < HOT["max_new_tokens"], (c.text, n)
