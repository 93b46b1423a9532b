"""Batched generation (left padding + KV cache, rlhf_worker.training.generation) against one prompt at a time.

Both sides use the same model, prompts, K samples per prompt, sampling settings and seeds (each
(prompt, sample) row has its own seeded generator, so both produce the same completions up to
float noise). Also times Hugging Face `model.generate` on the same batches as a reference.
Prints tokens/s by wall clock and by process CPU time (the latter is steadier on a shared machine).

Run:  python benchmarks/generation.py --prompts 16 --k 4 --max-new-tokens 32 --batch-size 32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from ppo_vs_trl import PROMPTS, machine  # noqa: E402
from rlhf_worker.training.generation import GenerationConfig, encode_queries, generate_stream  # noqa: E402
from rlhf_worker.training.policy_models import default_policy_path, format_prompt, load_policy  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_ours(model, tok, prompts, cfg, batch_size) -> int:
    return sum(b.new_tokens for b in generate_stream(model, tok, prompts, cfg, batch_size=batch_size))


def run_hf(model, tok, prompts, cfg, batch_size) -> int:
    texts = [format_prompt(tok, p) for p in prompts for _ in range(cfg.num_samples)]
    stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    tokens = 0
    torch.manual_seed(cfg.seed)
    for start in range(0, len(texts), batch_size):
        ids, mask = encode_queries(tok, texts[start:start + batch_size], cfg.max_prompt_tokens, "cpu")
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=cfg.temperature,
                                 top_p=cfg.top_p, top_k=0, max_new_tokens=cfg.max_new_tokens, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id)
        resp = out[:, ids.shape[1]:]
        for row in resp.tolist():
            n = next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
            tokens += n
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--single-prompts", type=int, default=4, help="prompts timed one at a time (extrapolated per token)")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--model-store", default=str(Path(__file__).resolve().parents[1] / "var" / "model_store"))
    args = p.parse_args()

    print("machine:", machine())
    model, tok = load_policy(default_policy_path(args.model_store), "cpu")
    prompts = (PROMPTS * 10)[: args.prompts]
    cfg = GenerationConfig(num_samples=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    print(f"SmolLM2-135M-Instruct fp32; {args.prompts} prompts x K={args.k}, max_new_tokens={args.max_new_tokens}, "
          f"batch_size={args.batch_size}", flush=True)
    run_ours(model, tok, prompts[:1], GenerationConfig(num_samples=1, max_new_tokens=2), 1)  # warm-up

    single_prompts = prompts[: args.single_prompts]
    single_cfg = cfg
    tokens_1, wall_1, cpu_1 = timed(lambda: sum(run_ours(model, tok, [q], single_cfg, 1) for q in single_prompts))
    print(f"one at a time : {tokens_1} tokens  wall {wall_1:.1f}s  {tokens_1 / wall_1:.1f} tok/s   cpu {tokens_1 / cpu_1:.1f} tok/cpu-s", flush=True)
    tokens_b, wall_b, cpu_b = timed(lambda: run_ours(model, tok, prompts, cfg, args.batch_size))
    print(f"batched (ours): {tokens_b} tokens  wall {wall_b:.1f}s  {tokens_b / wall_b:.1f} tok/s   cpu {tokens_b / cpu_b:.1f} tok/cpu-s", flush=True)
    if not args.skip_hf:
        tokens_h, wall_h, cpu_h = timed(lambda: run_hf(model, tok, prompts, cfg, args.batch_size))
        print(f"batched (HF generate): {tokens_h} tokens  wall {wall_h:.1f}s  {tokens_h / wall_h:.1f} tok/s   cpu {tokens_h / cpu_h:.1f} tok/cpu-s")
    print(f"ratio batched/one-at-a-time: wall {(tokens_b / wall_b) / (tokens_1 / wall_1):.2f}x, "
          f"cpu {(tokens_b / cpu_b) / (tokens_1 / cpu_1):.2f}x")


if __name__ == "__main__":
    main()
