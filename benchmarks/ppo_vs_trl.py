"""PPO throughput and learning, ours (rlhf_worker.training.ppo) against TRL's experimental PPOTrainer.

Both sides get the same policy (SmolLM2-135M-Instruct, optionally cut to its first --layers
layers), the same reward model, prompts, batch size, minibatch size, PPO epochs, response length,
temperature, learning rate, β, clip ranges and missing-stop penalty, in the same process.

Reward model (the same object type and weights for both): TRL needs an
AutoModelForSequenceClassification sharing the policy tokenizer, so we build
LlamaForSequenceClassification from the policy's own config and trunk weights, with a score head
set to (E[tok] − mean E) for a chosen word `tok` (default " great"): the score is how strongly
the policy's own LM would continue the finished chat with that word, i.e. it rewards upbeat
answers. It is shifted and scaled once so that scores of the prompts are mean 0, std 1.
TRL's value model is a copy of that reward model (as in TRL's own examples); ours is a value
head on the policy trunk. The score compared is the one TRL logs as `objective/scores`: the
reward model's score minus the missing-stop penalty (ours logs it as `objective/scores_with_penalty`).

Run:  python benchmarks/ppo_vs_trl.py --episodes 32 --batch-size 16
      (--layers 8 for a faster, smaller policy; --skip-trl / --skip-ours to run one side)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoTokenizer, LlamaForSequenceClassification  # noqa: E402

from rlhf_worker.training.policy_models import default_policy_path, format_prompt, load_policy  # noqa: E402
from rlhf_worker.training.ppo import PPOConfig, train  # noqa: E402

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
    "How do I make friends in a new city?",
    "What is your favourite colour?",
    "Describe the ocean.",
    "How do I stay motivated?",
    "What is rain?",
    "Recommend a book for a child.",
    "How does a bicycle work?",
    "What is the moon made of?",
    "Give me a compliment.",
    "What is a healthy breakfast?",
    "How do I learn to draw?",
    "What is music?",
    "Why do birds sing?",
    "How do I start running?",
    "What is friendship?",
    "Describe a sunny day.",
]


from machine_info import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def machine() -> str:
    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}"


def build_models(work: Path, model_store: str, layers: int, reward_word: str) -> tuple[str, str]:
    """Policy folder (optionally cut to `layers` layers) and a reward-model folder built from it."""
    base = default_policy_path(model_store)
    model, tok = load_policy(base, "cpu")
    if layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        model.config.layer_types = (
            model.config.layer_types[:layers] if getattr(model.config, "layer_types", None) else None
        )
    policy_dir = work / "policy"
    model.save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)

    rm = LlamaForSequenceClassification(model.config)
    rm.config.num_labels = 1
    rm.score = torch.nn.Linear(model.config.hidden_size, 1, bias=False)
    rm.model.load_state_dict(model.model.state_dict())
    emb = model.get_input_embeddings().weight.detach()
    word_id = tok(reward_word, add_special_tokens=False).input_ids[0]
    # calibrate on finished chats with a few canned answers, so scores are ~ mean 0, std 1
    canned = ["I don't know.", "Sure! Here is a short answer.", "Yes.", "That is a great question, thank you!"]
    calib = [format_prompt(tok, p) + a + "<|im_end|>" for p in PROMPTS[:12] for a in canned]
    with torch.no_grad():
        rm.score.weight.copy_((emb[word_id] - emb.mean(0))[None])
        rm.score.weight.div_(_rm_scores(rm, tok, calib).std().clamp(min=1e-6))
        # the score head has no bias (TRL's layout), so the mean is removed from both sides' logs
        offset = float(_rm_scores(rm, tok, calib).mean())
    rm.config.pad_token_id = tok.pad_token_id
    rm_dir = work / "reward"
    rm.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    (rm_dir / "offset.txt").write_text(str(offset))
    return str(policy_dir), str(rm_dir)


def _rm_scores(rm, tok, texts: list[str]) -> torch.Tensor:
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc.attention_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = rm.model(input_ids=enc.input_ids, attention_mask=mask, position_ids=pos).last_hidden_state
    return rm.score(hidden[:, -1]).squeeze(-1)  # left padding: the last column is every row's last token


def run_trl(args, policy_dir: str, rm_dir: str, work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig as TRLPPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    tok.padding_side = "left"
    tok.pad_token = "<|endoftext|>"  # never <|im_end|>, which TRL would mask inside prompts
    texts = [format_prompt(tok, p) for p in PROMPTS]
    ds = Dataset.from_dict({"input_ids": [tok(t, add_special_tokens=False).input_ids for t in texts]})
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    ref = AutoModelForCausalLM.from_pretrained(policy_dir)
    reward = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
    cfg = TRLPPOConfig(
        output_dir=str(work / "trl_out"),
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.batch_size // args.mini_batch_size,
        num_ppo_epochs=args.ppo_epochs,
        total_episodes=args.episodes,
        local_rollout_forward_batch_size=args.batch_size,
        response_length=args.response_length,
        temperature=args.temperature,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        kl_coef=args.kl_coef,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        gamma=1.0,
        lam=0.95,
        stop_token="eos",
        missing_eos_penalty=args.missing_stop_penalty,
        num_sample_generations=0,
        seed=args.seed,
        bf16=False,
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    logs: list[dict] = []
    snapshots: dict[int, dict] = {}
    trainer = PPOTrainer(
        args=cfg,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=ds,
        value_model=value,
        eval_dataset=ds.select(range(2)),
    )
    original_log = trainer.log

    def log(metrics, *a, **k):
        logs.append(dict(metrics))
        step = trainer.state.global_step
        if "objective/scores" in metrics and args.eval_every and step % args.eval_every == 0:
            snapshots[step] = snapshot(getattr(trainer.model, "policy", policy))
        print(
            "  trl",
            {k: round(v, 3) for k, v in metrics.items() if k in ("objective/scores", "objective/kl", "episode")},
            flush=True,
        )
        return original_log(metrics, *a, **k)

    trainer.log = log
    offset = float(Path(rm_dir, "offset.txt").read_text())
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    trained = getattr(trainer.model, "policy", policy)
    history = [
        {"objective/scores": m["objective/scores"] - offset, "objective/kl": m["objective/kl"]}
        for m in logs
        if "objective/scores" in m
    ]
    return {
        "episodes": cfg.total_episodes,
        "elapsed": elapsed,
        "cpu": cpu,
        "history": history,
        "policy": trained,
        "snapshots": snapshots,
    }


def run_ours(args, policy_dir: str, rm_dir: str, work: Path, trainable_layers: int) -> dict:
    model, tok = load_policy(policy_dir, "cpu")
    rm = LlamaForSequenceClassification.from_pretrained(rm_dir, num_labels=1).eval()
    offset = float(Path(rm_dir, "offset.txt").read_text())
    by_prompt = {p: format_prompt(tok, p) for p in PROMPTS}

    @torch.no_grad()
    def reward_fn(prompts: list[str], responses: list[str]) -> torch.Tensor:
        # the token layout TRL scores: chat prompt + response (+ <|im_end|> when the response stopped;
        # a response shorter than the limit must have stopped)
        def ended(r: str) -> str:
            stopped = len(tok(r, add_special_tokens=False).input_ids) < args.response_length
            return r + "<|im_end|>" if stopped else r

        return _rm_scores(rm, tok, [by_prompt[p] + ended(r) for p, r in zip(prompts, responses)]) - offset

    cfg = PPOConfig(
        total_episodes=args.episodes,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        learning_rate=args.lr,
        max_new_tokens=args.response_length,
        temperature=args.temperature,
        kl_coef=args.kl_coef,
        missing_stop_penalty=args.missing_stop_penalty,
        seed=args.seed,
        trainable_layers=trainable_layers,
        samples_per_prompt=1,  # TRL's PPO: one answer per prompt, the value head as the only baseline
    )
    history = []
    snapshots: dict[int, dict] = {}

    def on_progress(step, total, metrics, samples):
        if args.eval_every and step % args.eval_every == 0:
            snapshots[step] = snapshot(model)
        # TRL logs objective/scores after subtracting the missing-stop penalty: compare the same quantity
        history.append(
            {"objective/scores": metrics["objective/scores_with_penalty"], "objective/kl": metrics["objective/kl"]}
        )
        print(
            "  ours",
            step,
            {k: round(v, 3) for k, v in metrics.items() if k.startswith(("objective/s", "objective/kl", "time/"))},
            (samples or [{}])[0].get("response", "")[:80].replace("\n", " "),
            flush=True,
        )

    start, cpu = time.perf_counter(), time.process_time()
    result = train(
        cfg, PROMPTS, reward_fn, out_dir=str(work / "ours_out"), policy=(model, tok), on_progress=on_progress
    )
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "episodes": result.episodes,
        "elapsed": elapsed,
        "cpu": cpu,
        "history": history,
        "policy": model,
        "snapshots": snapshots,
    }


def snapshot(model) -> dict:
    """A copy of the policy weights (both sides pay the same ~0.1 s per copy)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def score_at_kl(curve: list[tuple[float, float]], kl: float) -> float | None:
    """Score at `kl` on the piecewise-linear curve through (KL, score) points (None outside its range)."""
    points = sorted(curve)
    for (k0, s0), (k1, s1) in zip(points, points[1:]):
        if k0 <= kl <= k1:
            return s0 if k1 == k0 else s0 + (s1 - s0) * (kl - k0) / (k1 - k0)
    return None


class Evaluator:
    """The fixed evaluation's reference policy, reward model and prompts, loaded once per run."""

    def __init__(self, policy_dir: str, rm_dir: str):
        self.ref, self.tok = load_policy(policy_dir, "cpu")
        self.rm = LlamaForSequenceClassification.from_pretrained(rm_dir, num_labels=1).eval()
        self.offset = float(Path(rm_dir, "offset.txt").read_text())


@torch.no_grad()
def evaluate(args, policy, ev: Evaluator) -> tuple[float, float, float]:
    """Score and KL of a trained policy on a fixed set: every prompt x `--eval-samples` seeded samples.

    The same sampler, reward formatting, penalty and reference for every side, so the comparison does
    not depend on which prompts each trainer's last steps happened to draw. Returns (mean penalised
    score, its standard error, mean KL per response = sum over tokens of log pi - log pi_ref).
    """
    from rlhf_worker.training.generation import encode_queries, sample_tokens
    from rlhf_worker.training.policy_models import stop_token_ids
    from rlhf_worker.training.ppo import forward_policy

    ref, tok, rm, offset = ev.ref, ev.tok, ev.rm, ev.offset
    policy = policy.eval()
    stops = stop_token_ids(tok)
    texts = [format_prompt(tok, p) for p in PROMPTS]
    ids, mask = encode_queries(tok, texts, 256, "cpu")
    scores, kls = [], []
    for sample in range(args.eval_samples):
        out = sample_tokens(
            policy,
            ids,
            mask,
            max_new_tokens=args.response_length,
            temperature=args.temperature,
            top_p=1.0,
            stop_ids=stops,
            pad_id=tok.pad_token_id,
            generator=torch.Generator().manual_seed(10_000 + sample),
        )
        lp, _, _ = forward_policy(policy, ids, mask, out.response_ids, out.response_mask, args.temperature)
        ref_lp, _, _ = forward_policy(ref, ids, mask, out.response_ids, out.response_mask, args.temperature)
        kls += ((lp - ref_lp) * out.response_mask).sum(1).tolist()
        full = [
            t + tok.decode(r[m], skip_special_tokens=False)
            for t, r, m in zip(texts, out.response_ids, out.response_mask)
        ]
        s = _rm_scores(rm, tok, full) - offset - args.missing_stop_penalty * (~out.has_stop).float()
        scores += s.tolist()
    n = len(scores)
    mean = sum(scores) / n
    se = (sum((x - mean) ** 2 for x in scores) / (n - 1) / n) ** 0.5
    return mean, se, sum(kls) / n


def summary(name: str, r: dict, last: int) -> tuple[float, float, float, float]:
    """Print and return (episodes/s, mean score and KL over the last `last` steps, episodes per CPU-second)."""
    eps = r["episodes"] / r["elapsed"]
    eps_cpu = r["episodes"] / r["cpu"]
    tail = r["history"][-last:]
    score = sum(h["objective/scores"] for h in tail) / len(tail)
    kl = sum(h["objective/kl"] for h in tail) / len(tail)
    first = r["history"][0]["objective/scores"]
    print(
        f"{name:9s} episodes={r['episodes']} wall={r['elapsed']:.1f}s episodes/s={eps:.3f} "
        f"cpu={r['cpu']:.1f}s episodes/cpu-s={eps_cpu:.4f} "
        f"score first step={first:+.3f} last {len(tail)} steps={score:+.3f} kl={kl:.3f}"
    )
    return eps, score, kl, eps_cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mini-batch-size", type=int, default=8)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.02)
    p.add_argument("--missing-stop-penalty", type=float, default=1.0)
    p.add_argument("--layers", type=int, default=0, help="keep only the first N layers of SmolLM2 (0 = all 30)")
    p.add_argument(
        "--trainable-layers",
        default="0",
        help="ours only, comma list: train the top N layers (0 = every weight, as TRL); one run per value",
    )
    p.add_argument("--reward-word", default=" great")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--last", type=int, default=2, help="average score/KL over the last N steps")
    p.add_argument(
        "--eval-samples", type=int, default=4, help="seeded samples per prompt in the fixed evaluation (0 = skip)"
    )
    p.add_argument(
        "--eval-every", type=int, default=5, help="also evaluate each side's policy every N steps (0 = only the end)"
    )
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument(
        "--model-store",
        default=str(Path(__file__).resolve().parents[1] / "var" / "model_store"),
        help="where the SmolLM2 safetensors copy is cached",
    )
    args = p.parse_args()

    print("machine:", machine())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ppo_vs_trl_"))
    work.mkdir(parents=True, exist_ok=True)
    policy_dir, rm_dir = build_models(work / "models", args.model_store, args.layers, args.reward_word)
    print(
        f"policy: SmolLM2-135M-Instruct{f' first {args.layers} layers' if args.layers else ''}; "
        f"episodes={args.episodes} batch={args.batch_size} minibatch={args.mini_batch_size} "
        f"ppo_epochs={args.ppo_epochs} response_length={args.response_length}",
        flush=True,
    )
    results = {}
    variants = [int(v) for v in str(args.trainable_layers).split(",") if v.strip()]
    if not args.skip_ours:
        for n in variants:
            torch.manual_seed(args.seed)
            results["ours" if n == 0 else f"ours-top{n}"] = run_ours(args, policy_dir, rm_dir, work, n)
    if not args.skip_trl:
        torch.manual_seed(args.seed)
        results["trl"] = run_trl(args, policy_dir, rm_dir, work)
    stats = {name: summary(name, r, args.last) for name, r in results.items()}
    if args.eval_samples:
        print(
            f"fixed evaluation: {len(PROMPTS)} prompts x {args.eval_samples} seeded samples per trained policy "
            f"(same sampler, reward, penalty and reference for every side)"
        )
        torch.manual_seed(args.seed)
        start_model, _ = load_policy(policy_dir, "cpu")
        ev = Evaluator(policy_dir, rm_dir)
        start = evaluate(args, start_model, ev)
        print(
            f"  start     step  0 score={start[0]:+.3f} (standard error {start[1]:.3f}) kl={start[2]:.3f}", flush=True
        )
        curves: dict[str, list[tuple[float, float]]] = {}
        for name, r in results.items():
            curves[name] = [(start[2], start[0])]
            final_step = len(r["history"])
            points = {**r.get("snapshots", {}), final_step: None}  # None = the trained policy itself
            for step in sorted(points):
                if points[step] is None:
                    policy = r["policy"]
                else:
                    policy, _ = load_policy(policy_dir, "cpu")
                    policy.load_state_dict(points[step])
                mean, se, kl = evaluate(args, policy, ev)
                curves[name].append((kl, mean))
                print(f"  {name:9s} step {step:2d} score={mean:+.3f} (standard error {se:.3f}) kl={kl:.3f}", flush=True)
        if "trl" in curves:
            for name in (n for n in curves if n != "trl"):
                for a, b in ((name, "trl"), ("trl", name)):
                    kl = curves[b][-1][0]
                    at = score_at_kl(curves[a], kl)
                    print(
                        f"  at {b}'s final KL {kl:.3f}: {a} scores "
                        f"{'n/a (outside its KL range)' if at is None else f'{at:+.3f}'} vs {b} {curves[b][-1][1]:+.3f}"
                    )
    if "trl" in stats:
        for name in (n for n in stats if n != "trl"):
            print(
                f"ratio episodes/s {name}/trl = {stats[name][0] / stats['trl'][0]:.2f}x (wall), "
                f"{stats[name][3] / stats['trl'][3]:.2f}x (per CPU-second); "
                f"score {name}-trl = {stats[name][1] - stats['trl'][1]:+.3f}; kl {name}={stats[name][2]:.3f} trl={stats['trl'][2]:.3f}"
            )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
