"""A few steps of reward, SFT and PPO training (full fine-tuning) and of generation on one device, with throughput
and peak memory per stage: the check that the CUDA / bf16 paths run (see gpu_check.sh).

On CUDA the training code runs under bf16 autocast where the GPU supports bf16 (`device.autocast_for`), with
float32 weights; peak memory is `torch.cuda.max_memory_allocated` per stage. `--tiny` runs the same stages
on the CPU with tiny random models (no model files needed), so the script itself is tested in CI; peak
memory is then the process's peak RSS so far. Every stage runs even when one fails; the exit status is 1
if any failed. `--set KEY=VALUE` passes a reward/SFT/PPO setting to every training stage that has it, so
a setting added to the training configs (an adapter, say) gets its own pass without changing this script.

Run:  python benchmarks/gpu_check.py [--tiny] [--device cuda:0] [--steps 4] [--set trainable_layers=8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rlhf_worker.training import ppo, reward, sft  # noqa: E402
from rlhf_worker.training.device import bf16_autocast_supported  # noqa: E402
from rlhf_worker.training.generation import GenerationConfig, generate_stream  # noqa: E402
from rlhf_worker.training.policy_models import default_policy_path, load_policy, save_tiny_policy  # noqa: E402
from rlhf_worker.training.reward_model import RewardScorer, save_tiny_backbone  # noqa: E402
from rlhf_worker.training.synthetic import synthetic_rankings  # noqa: E402


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB allocated (torch.cuda.max_memory_allocated)"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process so far)"


def check_on(model: torch.nn.Module, device: torch.device, what: str) -> None:
    """Fail loudly if a model did not land on the device asked for (a missed .to(device) runs silently on the CPU)."""
    actual = next(model.parameters()).device
    if actual.type != device.type:
        raise RuntimeError(f"{what} is on {actual}, expected {device}")


TRAINING_CONFIGS = (reward.RewardConfig, sft.SFTConfig, ppo.PPOConfig)


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """--set KEY=VALUE pairs; each key must be a setting of at least one training config."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"gpu_check: --set takes KEY=VALUE, got {pair!r}")
        settings[key.strip()] = value.strip()
    known = {f.name for cls in TRAINING_CONFIGS for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SystemExit(
            f"gpu_check: --set {unknown[0]}: no reward, SFT or PPO setting has that name "
            f"(settings: {', '.join(sorted(known))})"
        )
    return settings


def configured(cls, args, **base):
    """The stage's config with the --set values that this config has (validated like a job's form input)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls.from_dict({**base, **{k: v for k, v in args.settings.items() if k in names}})


def stage_reward(args, device, work: Path) -> tuple[str, RewardScorer]:
    rankings = synthetic_rankings(args.steps * 8 + 8, 4, seed=0, ties=False)
    cfg = configured(
        reward.RewardConfig,
        args,
        backbone=args.reward_backbone,
        epochs=1,
        batch_size=8,
        eval_fraction=0.1,
        eval_every=0,
        save_every=0,
        max_length=128,
        device=str(device),
    )
    result = reward.train(cfg, rankings, out_dir=work / "reward")
    scorer = RewardScorer.from_pretrained(result.model_dir, device=device)
    check_on(scorer.model, device, "reward model")
    rate = result.num_train_pairs / result.loop_seconds
    return (
        f"{result.step} steps, {result.num_train_pairs} comparisons, {rate:.1f} comparisons/s (training loop)",
        scorer,
    )


def stage_sft(args, device, work: Path) -> str:
    rankings = synthetic_rankings(args.steps * 4, 2, seed=1)
    examples = [(r.prompt, r.completions[0]) for r in rankings]
    cfg = configured(sft.SFTConfig, args, epochs=1, batch_size=4, eval_fraction=0.0, max_seq_len=256, warmup_steps=1)
    result = sft.train(cfg, examples, out_dir=str(work / "sft"), base_path=args.policy, device=device)
    return f"{result.steps} steps, {result.steps * cfg.batch_size / result.elapsed_s:.2f} examples/s, loss {result.train_loss:.3f}"


def stage_ppo(args, device, work: Path, scorer: RewardScorer | None) -> str:
    prompts = [r.prompt for r in synthetic_rankings(16, 1, seed=2)]
    if scorer is not None:

        def reward_fn(ps, rs):
            return scorer.score(ps, rs)
    else:  # the reward stage failed: still exercise PPO, with a length reward

        def reward_fn(ps, rs):
            return [len(r) / 100 for r in rs]

    batch_size = 8
    cfg = configured(
        ppo.PPOConfig,
        args,
        total_episodes=batch_size * args.steps,
        batch_size=batch_size,
        mini_batch_size=4,
        ppo_epochs=1,
        max_new_tokens=args.new_tokens,
        trainable_layers=0,
        samples_per_step=0,
    )
    result = ppo.train(cfg, prompts, reward_fn, out_dir=str(work / "ppo"), base_path=args.policy, device=device)
    last = result.metrics
    scope = "full fine-tuning" if cfg.trainable_layers == 0 else f"top {cfg.trainable_layers} layers"
    return (
        f"{result.steps} steps ({scope}), {result.episodes / result.elapsed_s:.2f} episodes/s; last step: "
        f"rollout {last.get('time/rollout_s', float('nan')):.2f}s, update {last.get('time/update_s', float('nan')):.2f}s"
    )


def stage_generation(args, device, work: Path) -> str:
    model, tokenizer = load_policy(args.policy, device)
    check_on(model, device, "policy")
    prompts = [r.prompt for r in synthetic_rankings(8, 1, seed=3)]
    cfg = GenerationConfig(num_samples=4, max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.9)
    generate_stream(
        model, tokenizer, prompts[:1], GenerationConfig(num_samples=1, max_new_tokens=2), batch_size=1
    ).__next__()
    start = time.perf_counter()
    tokens = sum(b.new_tokens for b in generate_stream(model, tokenizer, prompts, cfg, batch_size=32))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    again = [c for b in generate_stream(model, tokenizer, prompts[:2], cfg, batch_size=3) for c in b.completions]
    first = [c for b in generate_stream(model, tokenizer, prompts[:2], cfg, batch_size=8) for c in b.completions]
    same = "same" if again == first else "DIFFERENT"
    return f"{len(prompts) * cfg.num_samples} rows, {tokens} tokens, {tokens / seconds:.1f} tokens/s; per-row seeds: {same} samples with batch 3 and 8"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (tests the script, not a GPU)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument(
        "--steps", type=int, default=None, help="optimisation steps per training stage (default 8, 2 with --tiny)"
    )
    p.add_argument("--new-tokens", type=int, default=None, help="tokens per response (default 48, 8 with --tiny)")
    p.add_argument("--policy", default=None, help="policy folder (default: SmolLM2-135M-Instruct from MODEL_STORE)")
    p.add_argument("--reward-backbone", default="", help="reward backbone folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--stages", default="reward,sft,ppo,generation")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a reward/SFT/PPO setting for every training stage that has it (e.g. a job setting such as "
        "trainable_layers=8); repeatable",
    )
    args = p.parse_args()
    args.settings = parse_settings(args.set)
    args.steps = args.steps or (2 if args.tiny else 8)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 48)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: CUDA is not available here (torch {torch.__version__}); use --tiny to check the script on the CPU"
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        return run_stages(args, device, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_stages(args, device: torch.device, work: Path) -> int:
    if args.tiny:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        args.policy = args.policy or save_tiny_policy(str(work / "tiny-policy"), seed=0, hidden_size=32, num_layers=2)
        args.reward_backbone = args.reward_backbone or save_tiny_backbone(work / "tiny-bert", "bert", seed=0)
    else:
        model_store = os.environ.get("MODEL_STORE") or str(Path(__file__).resolve().parents[1] / "var" / "models")
        args.policy = args.policy or default_policy_path(model_store)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precision = "bf16 autocast, float32 weights" if bf16_autocast_supported(device) else "float32"
    print(
        f"gpu_check on {device} ({name}), torch {torch.__version__}, {precision}; policy {args.policy}; "
        f"{args.steps} steps per stage, {args.new_tokens} new tokens"
        + "".join(f", {k}={v}" for k, v in args.settings.items()),
        flush=True,
    )

    failed = []
    scorer = None
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in wanted:
        reset_peak(device)
        start = time.perf_counter()
        try:
            if stage == "reward":
                summary, scorer = stage_reward(args, device, work)
            elif stage == "sft":
                summary = stage_sft(args, device, work)
            elif stage == "ppo":
                summary = stage_ppo(args, device, work, scorer)
            elif stage == "generation":
                summary = stage_generation(args, device, work)
            else:
                raise ValueError(f"unknown stage {stage!r}: use reward, sft, ppo, generation")
            if "DIFFERENT" in summary:
                raise RuntimeError(summary)
            print(
                f"[ok]   {stage:10s} {time.perf_counter() - start:6.1f}s  {summary}; {peak_memory(device)}", flush=True
            )
        except Exception:  # report every stage, then fail the run
            failed.append(stage)
            print(f"[FAIL] {stage:10s} {time.perf_counter() - start:6.1f}s", flush=True)
            traceback.print_exc()
    print("gpu_check:", "all stages passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
