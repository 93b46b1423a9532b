"""Does PPO with its default settings raise the reward-model score on the demo project within ~10 minutes?

What a user of `make run` would do, without the web app in between:
1. Label the demo project: each of its 36 prompts has four answers (careful, terse, flawed, off-task,
   see `labeling_app/demo_data.py`). Two simulated labelers rank them as the instructions ask:
   careful best, then terse, then off-task, with the flawed (wrong, made-up or rude) answer last; the
   second labeler calls careful and terse a tie on every third prompt.
2. Train a reward model on those rankings with the reward job's defaults (`RewardConfig()`: all-MiniLM-L6-v2
   from its wheel, one epoch, normalised to mean 0 / std 1 over the labelled answers).
3. Run PPO with the PPO job's defaults (`PPOConfig()`, SmolLM2-135M-Instruct from its wheel) on the demo
   prompts against that reward model, scoring the plain prompt text as the PPO job does.
4. Before/after check that does not depend on which prompts a step happened to draw: sample one answer
   per demo prompt from the starting policy and from the trained one (same seed, same settings as PPO
   sampling) and score all of them with the reward model; print the paired mean difference.

Run:  python benchmarks/ppo_demo_rise.py [--total-episodes N] [--lr X] ...  (any PPOConfig field)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from labeling_app.demo_data import DEMO_PROMPTS, demo_completions  # noqa: E402
from machine_info import cpu_model  # noqa: E402
from rlhf_worker.training import ppo, reward  # noqa: E402
from rlhf_worker.training.generation import decode_responses, encode_queries, sample_tokens  # noqa: E402
from rlhf_worker.training.policy_models import default_policy_path, format_prompt, load_policy, stop_token_ids  # noqa: E402
from rlhf_worker.training.reward_model import RewardScorer  # noqa: E402


def demo_rankings() -> list[reward.Ranking]:
    rankings = []
    for i, (prompt, careful, flawed) in enumerate(DEMO_PROMPTS):
        answers = demo_completions(careful, flawed)  # careful, terse, flawed, off-task
        rankings.append(reward.Ranking(prompt, answers, [1, 2, 4, 3], labeler="labeler-a", group=str(i)))
        second = [1, 1, 4, 3] if i % 3 == 0 else [1, 2, 4, 3]
        rankings.append(reward.Ranking(prompt, answers, second, labeler="labeler-b", group=str(i)))
    return rankings


@torch.no_grad()
def sample_answers(model, tok, prompts: list[str], cfg: ppo.PPOConfig, seed: int) -> tuple[list[str], int]:
    """One sampled answer per prompt, and how many reached max_new_tokens without a stop token."""
    texts = [format_prompt(tok, p) for p in prompts]
    ids, mask = encode_queries(tok, texts, cfg.max_prompt_tokens, "cpu")
    out = sample_tokens(
        model,
        ids,
        mask,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=1.0,
        stop_ids=stop_token_ids(tok),
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    return decode_responses(tok, out.response_ids, stop_token_ids(tok)), int((~out.has_stop).sum())


def sample_seeds(model, tok, prompts: list[str], cfg: ppo.PPOConfig, seeds: int) -> tuple[list[list[str]], int]:
    """`sample_answers` with seeds 1000, 1001, ...: the answers per seed and how many were cut in all."""
    runs = [sample_answers(model, tok, prompts, cfg, 1000 + s) for s in range(seeds)]
    return [answers for answers, _ in runs], sum(cut for _, cut in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(ppo.PPOConfig):
        if f.type in ("int", "float", int, float):
            p.add_argument("--" + f.name.replace("_", "-"), type=int if f.type in ("int", int) else float, default=None)
    p.add_argument("--rm-epochs", type=int, default=None, help="reward-model epochs (default: RewardConfig's)")
    p.add_argument("--eval-seeds", type=int, default=2, help="answers per prompt in the before/after check")
    p.add_argument("--model-store", default=str(ROOT / "var" / "model_store"))
    args = p.parse_args()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ppo.PPOConfig)
        if getattr(args, f.name, None) is not None
    }
    cfg = dataclasses.replace(ppo.PPOConfig(), **overrides)
    cfg.validate()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"python {platform.python_version()}"
    )
    print("PPO config (defaults unless given):", {k: v for k, v in dataclasses.asdict(cfg).items()})
    work = Path(tempfile.mkdtemp(prefix="ppo_demo_"))
    prompts = [prompt for prompt, _, _ in DEMO_PROMPTS]

    t0 = time.perf_counter()
    rm_cfg = reward.RewardConfig() if args.rm_epochs is None else reward.RewardConfig(epochs=args.rm_epochs)
    rm = reward.train(rm_cfg, demo_rankings(), out_dir=work / "reward")
    print(
        f"reward model: {rm_cfg.epochs} epoch(s), {time.perf_counter() - t0:.0f} s, {rm.num_train_rankings} train / {rm.num_eval_rankings} "
        f"held-out rankings, held-out metrics { ({k: round(v, 3) for k, v in rm.metrics.items() if k.startswith('eval')}) }"
    )
    scorer = RewardScorer.from_pretrained(rm.model_dir, device="cpu")

    policy_path = default_policy_path(args.model_store)
    start_model, tok = load_policy(policy_path, "cpu")
    before, cut_before = sample_seeds(start_model, tok, prompts, cfg, args.eval_seeds)

    def on_progress(step, total, m, samples):
        print(
            f"step {step:3d}/{total} t={m['train/episodes'] / m['time/episodes_per_s']:6.0f}s score={m['objective/scores']:+.3f} "
            f"kl={m['objective/kl']:.3f} len={m['response/length']:.1f} no_stop={m['response/no_stop_fraction']:.2f} "
            f"| {(samples or [{}])[0].get('response', '')[:70]!r}",
            flush=True,
        )

    result = ppo.train(
        cfg,
        prompts,
        scorer.score,
        out_dir=str(work / "policy"),
        base_path=policy_path,
        on_progress=on_progress,
        device="cpu",
    )
    scores = [h["objective/scores"] for h in result.history]
    print(
        f"PPO: {result.steps} steps, {result.episodes} episodes in {result.elapsed_s:.0f} s; "
        f"mean score of first 3 steps {statistics.mean(scores[:3]):+.3f}, last 3 steps {statistics.mean(scores[-3:]):+.3f} "
        f"(rise {ppo.mean_score_rise(result.history):+.3f}); KL last step {result.history[-1]['objective/kl']:.3f}"
    )

    trained, _ = load_policy(result.path, "cpu")
    after, cut_after = sample_seeds(trained, tok, prompts, cfg, args.eval_seeds)
    answers = len(prompts) * args.eval_seeds
    print(
        f"answers cut at {cfg.max_new_tokens} tokens: before {cut_before}/{answers} = {cut_before / answers:.0%}, "
        f"after {cut_after}/{answers} = {cut_after / answers:.0%}"
    )
    diffs = []
    for b, a in zip(before, after):
        sb, sa = scorer.score(prompts, b), scorer.score(prompts, a)
        diffs += (sa - sb).tolist()
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    se = sd / len(diffs) ** 0.5
    all_before = [float(x) for b in before for x in scorer.score(prompts, b)]
    all_after = [float(x) for a in after for x in scorer.score(prompts, a)]
    print(
        f"before/after on all {len(prompts)} demo prompts x {args.eval_seeds} samples: mean score "
        f"{statistics.mean(all_before):+.3f} -> {statistics.mean(all_after):+.3f}; paired difference {mean:+.3f} "
        f"(standard error {se:.3f}, t = {mean / se if se else float('nan'):.1f})"
    )
    for prompt, b, a in list(zip(prompts, before[0], after[0]))[:3]:
        print(f"  {prompt!r}\n    before: {b[:100]!r}\n    after:  {a[:100]!r}")


if __name__ == "__main__":
    main()
