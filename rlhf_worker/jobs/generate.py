"""Generate job: sample K completions per prompt from a policy version; each prompt's K become a ranking task at once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from labeling_app.services.projects import model_completions_create
from rlhf_worker.jobs.policy_common import (
    DataSelection,
    check_policy,
    check_prompts_selected,
    check_selection,
    resolve_policy,
    selected_prompts,
)
from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.device import device_problem
from rlhf_worker.training.generation import GenerationConfig, generate_stream
from rlhf_worker.training.policy_models import load_policy


# The start form shows these first; every other setting goes under "Advanced".
COMMON_FIELDS = ("project_ids", "policy_version_id", "max_new_tokens", "temperature", "device")
# The "Quick CPU demo" preset: a run of a minute or two on a laptop CPU (the rest stays at its default).
QUICK_CPU_DEMO = {"max_new_tokens": 32, "batch_size": 4, "device": "cpu"}


@dataclass(frozen=True)
class Config(DataSelection):
    """Settings of a generate job (K comes from each project's completions_per_task)."""

    policy_version_id: int | None = field(
        default=None,
        metadata={"help": "Policy version to sample from; empty = the promoted policy, else the default model."},
    )
    temperature: float = field(default=0.7, metadata={"help": "Softmax temperature; 0 means greedy decoding."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling threshold (1 = off)."})
    top_k: int = field(
        default=0, metadata={"help": "Sample among the k most likely tokens only, before top-p (0 = off)."}
    )
    max_new_tokens: int = field(
        default=128,
        metadata={
            "help": "Longest completion, in tokens (a completion cut here is marked 'cut at the length limit' for the labelers)."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Random seed; the same seed, prompt and version give the same completions."}
    )
    batch_size: int = field(default=16, metadata={"help": "Rows (prompt x sample) generated together."})
    create_tasks: bool = field(default=True, metadata={"help": "Turn each prompt's K completions into a ranking task."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, or cuda[:N]."})

    def validate(self) -> None:
        self.validate_selection()
        self.sampling(1).validate()
        if not 1 <= self.batch_size <= 1024:
            raise ConfigError("batch_size", "must be between 1 and 1024")
        if problem := device_problem(self.device):
            raise ConfigError("device", problem)

    def sampling(self, num_samples: int) -> GenerationConfig:
        return GenerationConfig(
            num_samples=num_samples,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )


def check(cfg: Config) -> None:
    """At start: the prompt selection (projects, dates) holds prompts, and the chosen policy version exists."""
    check_selection(cfg)
    check_policy(cfg.policy_version_id, field_name="policy_version_id")
    check_prompts_selected(cfg)


def run(job, ctx) -> None:
    """Generate for every selected prompt, writing each prompt's completions (and task) as soon as they are done."""
    cfg: Config = ctx.config
    version = resolve_policy(cfg.policy_version_id, field_name="policy_version_id")
    prompts = selected_prompts(cfg)
    if not prompts:
        raise ValueError("no prompts match the selection (projects, prompt ids, dates)")
    by_project = defaultdict(list)
    for prompt in prompts:
        by_project[prompt["project_id"]].append(prompt)
    ctx.log(f"sampling from {version} for {len(prompts)} prompts in {len(by_project)} project(s)")
    model, tokenizer = load_policy(version.path, cfg.device)
    done = completions_written = tasks_written = 0
    for group in by_project.values():
        sampling = cfg.sampling(group[0]["completions_per_task"])
        stream = generate_stream(
            model,
            tokenizer,
            [p["prompt"] for p in group],
            sampling,
            batch_size=cfg.batch_size,
            should_stop=ctx.should_stop,
            prompt_keys=[p["prompt_id"] for p in group],
        )
        for batch in stream:
            samples = []
            for index, texts, stopped in zip(batch.prompt_indices, batch.completions, batch.stopped, strict=True):
                prompt = group[index]
                written = model_completions_create(
                    prompt_id=prompt["prompt_id"],
                    texts=texts,
                    model_version_id=version.pk,
                    sampling=_settings(sampling),
                    create_task=cfg.create_tasks,
                    shuffle_seed=cfg.seed + prompt["prompt_id"],
                    finish_reasons=["stop" if s else "length" for s in stopped],
                )
                completions_written += len(written)
                tasks_written += int(cfg.create_tasks)
                samples.append({"prompt": prompt["text"][:500], "completion": texts[0][:1000]})
            done += len(batch.prompt_indices)
            ctx.report(
                done,
                len(prompts),
                {
                    "generate/prompts_done": done,
                    "generate/completions": completions_written,
                    "generate/tasks": tasks_written,
                    "generate/no_stop": batch.finished_without_stop,
                },
                samples[:3] or None,
            )
        if ctx.should_stop():
            break
    ctx.log(f"wrote {completions_written} completions and {tasks_written} ranking tasks")
    return None


def _settings(sampling: GenerationConfig) -> dict:
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_new_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "num_samples": sampling.num_samples,
    }
