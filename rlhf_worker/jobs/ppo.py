"""PPO job: optimise a policy version against a reward model version; the result is a new policy version."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from labeling_app.selectors.training_data import prompts_for_training
from rlhf_worker.jobs.common import (
    check_resume,
    model_version,
    run_training,
    subconfig,
    training_processes,
    version_name,
    write_data_snapshot,
)
from rlhf_worker.jobs.policy_common import (
    DataSelection,
    check_policy,
    check_prompts_selected,
    check_selection,
    fresh_selection,
    resolve_policy,
    resolve_reward,
    resumed_run,
    selected_prompts,
)
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.services.models import model_version_eval_record
from rlhf_worker.training import ppo
from rlhf_worker.training.checkpoint import CHECKPOINT_DIR
from rlhf_worker.training.config_base import ConfigError, config_to_dict
from rlhf_worker.training.ppo import PPOConfig, mean_score_rise
from rlhf_worker.training.reward_model import RewardScorer, reward_prompt_text


# The start form shows these first; every other setting goes under "Advanced".
COMMON_FIELDS = ("project_ids", "base_version_id", "reward_version_id", "total_episodes", "kl_coef", "name", "device")
# The "Quick CPU demo" preset: a run of a minute or two on a laptop CPU (the rest stays at its default).
QUICK_CPU_DEMO = {
    "total_episodes": 32,
    "batch_size": 8,
    "mini_batch_size": 4,
    "ppo_epochs": 1,
    "max_new_tokens": 16,
    "max_prompt_tokens": 128,
    "trainable_layers": 2,
    "samples_per_step": 1,
    "device": "cpu",
}


@dataclass(frozen=True)
class Config(PPOConfig, DataSelection):
    """PPO settings plus the prompts, the starting policy and the reward model."""

    base_version_id: int | None = field(
        default=None,
        metadata={
            "help": "Policy version to start from (also the KL reference); empty = the promoted policy, else the default model."
        },
    )
    reward_version_id: int | None = field(
        default=None, metadata={"help": "Reward model version to optimise against; empty = the promoted reward model."}
    )
    resume_job_id: int | None = field(
        default=None,
        metadata={
            "help": "An earlier PPO job (cancelled, failed or lost) whose last checkpoint, starting policy, reward model and prompts this job continues (with the same settings)."
        },
    )
    name: str = field(default="", metadata={"help": "Name of the new policy version (default: 'PPO (job #N)')."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, or cuda[:N]."})

    def validate(self) -> None:
        self.validate_selection()
        PPOConfig.validate(self)
        if len(self.name) > 200:
            raise ConfigError("name", "must be at most 200 characters")


def check(cfg: Config) -> None:
    """At start: the prompt selection (projects, dates) holds prompts, the starting policy exists, and the reward
    model resolves (the chosen one, else the promoted one: `resolve_reward`, as `run` will); or the job to resume
    left a checkpoint written with these settings."""
    check_selection(cfg)
    if cfg.resume_job_id is not None:  # it continues from that job's policy, reward model and prompts
        check_resume(TrainingJob.Kind.PPO, cfg.resume_job_id, PPOConfig, cfg)
        return
    check_policy(cfg.base_version_id, field_name="base_version_id")
    resolve_reward(cfg.reward_version_id, field_name="reward_version_id")
    check_prompts_selected(cfg)


def load_reward_fn(version: ModelVersion, device: str) -> Callable:
    """reward_fn(prompts, responses) -> normalised scores, from a saved reward model folder."""
    scorer = RewardScorer.from_pretrained(version.path, device=device)
    return lambda prompts, responses: scorer.score(prompts, responses)


def run(job, ctx) -> ModelVersion | None:
    cfg: Config = ctx.config
    resumed = resumed_run(TrainingJob.Kind.PPO, cfg)
    if resumed:  # exactly the starting policy, reward model and prompts of the interrupted run, in its order
        base, selection = resumed.base, resumed.selection()
        reward = model_version(
            resumed.snapshot["reward_version_id"], kind=ModelVersion.Kind.REWARD, field="resume_job_id"
        )
        prompts = list(prompts_for_training(prompt_ids=resumed.snapshot["prompt_ids"]))
    else:
        base, selection = resolve_policy(cfg.base_version_id, field_name="base_version_id"), fresh_selection(cfg)
        reward = resolve_reward(cfg.reward_version_id, field_name="reward_version_id")
        prompts = selected_prompts(cfg)
    resume_from = resumed.checkpoint if resumed else None
    if not prompts:
        raise ValueError("no prompts match the selection (projects, prompt ids, dates)")
    snapshot = {
        "prompt_ids": [p["prompt_id"] for p in prompts],
        **selection,
        "base_version_id": base.pk,
        "reward_version_id": reward.pk,
        "resumed_from_job": cfg.resume_job_id,
    }
    write_data_snapshot(ctx.out_dir, snapshot)
    # the policy sees each prompt's chat messages; the reward model reads them as it did in training
    inputs = [p["prompt"] for p in prompts]
    reward_texts = [reward_prompt_text(p["prompt"]) for p in prompts]

    resuming = f"resuming job {cfg.resume_job_id} " if resume_from else ""
    ctx.log(f"PPO {resuming}from {base} against {reward} on {len(prompts)} prompts")
    checkpoint_dir = ctx.out_dir / CHECKPOINT_DIR
    if training_processes(cfg) > 1:  # each rank loads the reward model from its folder
        result = run_training(
            "ppo",
            subconfig(PPOConfig, cfg),
            {
                "prompts": inputs,
                "reward_model_path": reward.path,
                "out_dir": str(ctx.out_dir / "policy"),
                "base_path": base.path,
                "device": cfg.device,
                "reward_prompts": reward_texts,
                "checkpoint_dir": str(checkpoint_dir),
                "resume_from": str(resume_from) if resume_from else None,
            },
            ctx,
        )
    else:
        result = ppo.train(
            subconfig(PPOConfig, cfg),
            inputs,
            load_reward_fn(reward, cfg.device),
            out_dir=str(ctx.out_dir / "policy"),
            base_path=base.path,
            on_progress=ctx.report,
            should_stop=ctx.should_stop,
            device=cfg.device,
            reward_prompts=reward_texts,
            checkpoint_dir=checkpoint_dir,
            resume_from=resume_from,
        )
    if result.stopped:
        ctx.log(
            f"stopped at step {result.steps}; checkpoint kept: start a PPO job with resume_job_id={job.pk} "
            "(or Resume on its page) to continue"
        )
        return None
    if result.path is None:
        return None
    rise = mean_score_rise(result.history)
    ctx.log(f"mean score rose by {rise:+.3f} over {result.steps} steps ({result.episodes} episodes)")
    metrics = dict(result.metrics)
    metrics.update(
        {
            "objective/score_rise": rise,
            "train/steps": result.steps,
            "train/episodes": result.episodes,
            "train/seconds": result.elapsed_s,
        }
    )
    before, after = result.eval_before, result.eval_after
    if before is not None and after is not None:
        eval_ids = [prompts[i]["prompt_id"] for i in after.prompt_indices]
        ctx.log(
            f"reward-model score on {len(eval_ids)} prompts: {before.mean_score:+.3f} ({base}) -> "
            f"{after.mean_score:+.3f} (trained); answers cut at {cfg.max_new_tokens} tokens: "
            f"{before.cut_fraction:.0%} -> {after.cut_fraction:.0%}"
        )
        metrics.update(after.metrics("eval/"))
        metrics.update(before.metrics("eval/base_"))
        metrics.update({"eval/prompts": len(eval_ids), "eval/reward_model_id": reward.pk})
        snapshot["eval_prompt_ids"] = eval_ids
    version = ctx.db(
        lambda: ModelVersion.objects.create(
            kind=ModelVersion.Kind.POLICY,
            name=version_name(job, cfg.name, "PPO"),
            path=result.path,
            parent=base,
            reward_model=reward,
            training_job=job,
            config=config_to_dict(cfg),
            metrics=metrics,
            data_snapshot=snapshot,
        ),
        "registering the model version",
    )
    if before is not None and after is not None:
        # The starting policy's score on the same prompts, shown on its own row of the model versions page.
        base_eval = {
            **before.metrics("eval/"),
            "eval/prompts": len(eval_ids),
            "eval/reward_model_id": reward.pk,
            "eval/job_id": job.pk,
            "eval/compared_with_id": version.pk,
            "eval/prompt_ids": eval_ids,
        }
        ctx.db(
            lambda: model_version_eval_record(version_id=base.pk, evaluation=base_eval),
            "recording the starting policy's evaluation",
        )
    return version
