"""Our batched sampler (rlhf_worker.training.generation) against Hugging Face `model.generate` on the same batches.

Both sides get the same model, the same rows (prompt x K samples, ordered by prompt length as
`generate_stream` orders them), the same batches, left padding, KV cache, temperature and top-p,
and the same stop tokens. Ours draws each row from its own seeded generator (a row's sample does
not depend on the batch); `generate` draws from the global generator. The runs alternate
(ours, generate, ours, generate, ...) so load from other processes hits both alike; each run
prints tokens/s by wall clock and by process CPU time, then the medians and their ratio.

Run:  python benchmarks/generation.py --prompts 16 --k 4 --max-new-tokens 32 --batch-size 32 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from ppo_vs_trl import PROMPTS, machine  # noqa: E402
from rlhf_worker.training.generation import GenerationConfig, encode_queries, generate_stream  # noqa: E402
from rlhf_worker.training.policy_models import default_policy_path, format_prompt, load_policy, stop_token_ids  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_ours(model, tok, prompts, cfg, batch_size) -> int:
    return sum(b.new_tokens for b in generate_stream(model, tok, prompts, cfg, batch_size=batch_size))


def rows_in_our_order(tok, prompts, cfg) -> list[str]:
    """The row texts in the order generate_stream batches them (longest prompt first, K samples together)."""
    texts = [format_prompt(tok, p) for p in prompts]
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    return [texts[i] for i in order for _ in range(cfg.num_samples)]


def run_hf(model, tok, prompts, cfg, batch_size) -> int:
    rows = rows_in_our_order(tok, prompts, cfg)
    stop = stop_token_ids(tok)
    tokens = 0
    torch.manual_seed(cfg.seed)
    for start in range(0, len(rows), batch_size):
        ids, mask = encode_queries(tok, rows[start : start + batch_size], cfg.max_prompt_tokens, "cpu")
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=0,
                max_new_tokens=cfg.max_new_tokens,
                eos_token_id=stop,
                pad_token_id=tok.pad_token_id,
            )
        for row in out[:, ids.shape[1] :].tolist():
            tokens += next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side, alternating")
    p.add_argument("--single-prompts", type=int, default=0, help="also time this many prompts one row at a time (slow)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); the same for both sides")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--model-store", default=str(Path(__file__).resolve().parents[1] / "var" / "model_store"))
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    print("machine:", machine())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    model, tok = load_policy(default_policy_path(args.model_store), "cpu")
    prompts = (PROMPTS * 10)[: args.prompts]
    cfg = GenerationConfig(
        num_samples=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens
    )
    print(
        f"SmolLM2-135M-Instruct fp32; {args.prompts} prompts x K={args.k}, max_new_tokens={args.max_new_tokens}, "
        f"batch_size={args.batch_size}, temperature={args.temperature}, top_p={args.top_p}",
        flush=True,
    )
    run_ours(model, tok, prompts[:2], GenerationConfig(num_samples=2, max_new_tokens=4), 4)  # warm-up, both paths
    if not args.skip_hf:
        run_hf(model, tok, prompts[:2], GenerationConfig(num_samples=2, max_new_tokens=4), 4)

    if args.single_prompts:
        singles = prompts[: args.single_prompts]
        n1, w1, c1 = timed(lambda: sum(run_ours(model, tok, [q], cfg, 1) for q in singles))
        print(
            f"one row at a time: {n1} tokens  wall {w1:.1f}s  {n1 / w1:.1f} tok/s   cpu {n1 / c1:.1f} tok/cpu-s",
            flush=True,
        )

    sides = [("ours", run_ours)] + ([] if args.skip_hf else [("generate", run_hf)])
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in sides}
    for run in range(1, args.repeats + 1):
        for name, fn in sides:
            tokens, wall, cpu = timed(lambda fn=fn: fn(model, tok, prompts, cfg, args.batch_size))
            rates[name].append((tokens / wall, tokens / cpu))
            print(
                f"run {run} {name:8s}: {tokens} tokens  wall {wall:.1f}s  {tokens / wall:.1f} tok/s   "
                f"cpu {cpu:.1f}s  {tokens / cpu:.1f} tok/cpu-s   load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    medians = {
        name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for name, r in rates.items()
    }
    for name, (wall_rate, cpu_rate) in medians.items():
        print(f"median {name:8s}: {wall_rate:.1f} tok/s wall, {cpu_rate:.1f} tok/cpu-s")
    if "generate" in medians:
        (ow, oc), (hw, hc) = medians["ours"], medians["generate"]
        print(f"ratio ours/generate (median tokens/s): wall {ow / hw:.2f}x, cpu {oc / hc:.2f}x")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
