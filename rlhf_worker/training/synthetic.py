"""Synthetic rankings with a learnable preference (marker words), for tests, smoke runs and benchmarks."""

from __future__ import annotations

import random

from .reward import Ranking

FILLER = (
    "the a of and to in is it that for on with as was at by this from or an be are have not but we they you "
    "one all there their what so up out if about who get which go me when make can like time no just him know "
    "take people into year your some could them see other than then now look only come its over think also back "
    "after use two how our work first well way even new want because any these give day most us river garden "
    "music window paper travel market history science water winter forest city train doctor coffee letter"
).split()
TOPICS = "bread baking,rivers,solar power,chess openings,tax forms,bird migration,old maps,bike repair".split(",")
POSITIVE = ("excellent", "clear", "helpful", "accurate")
NEGATIVE = ("wrong", "rude", "confusing")


def _completion(rng: random.Random, n_pos: int, n_neg: int, min_words: int, max_words: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(min_words, max_words))]
    for marker in rng.sample(POSITIVE, n_pos) + rng.sample(NEGATIVE, n_neg):
        words.insert(rng.randint(0, len(words)), marker)
    return " ".join(words)


def synthetic_rankings(
    n_prompts: int,
    k: int,
    *,
    seed: int = 0,
    labelers_per_prompt: int = 1,
    noise: float = 0.0,
    min_words: int = 4,
    max_words: int = 40,
    prompt_max_extra_words: int = 20,
    ties: bool = True,
) -> list[Ranking]:
    """Rankings whose true quality is (#positive markers - #negative markers); equal quality = tie.

    Each labeler perceives quality + N(0, noise) rounded, so several labelers of one prompt may disagree.
    ties=False gives every completion of a prompt a different true quality (needs k <= 8), so a noise-free
    ranking has all k(k-1)/2 pairs.
    """
    levels = range(-len(NEGATIVE), len(POSITIVE) + 1)
    if not ties and k > len(levels):
        raise ValueError(f"ties=False needs k <= {len(levels)}, got {k}")
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        extra = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, prompt_max_extra_words)))
        prompt = f"Write a short answer about {rng.choice(TOPICS)}. {extra}".strip()
        if ties:
            counts = [(rng.randint(0, len(POSITIVE)), rng.randint(0, 1)) for _ in range(k)]
        else:
            counts = []
            for q in rng.sample(list(levels), k):
                options = [(pos, pos - q) for pos in range(len(POSITIVE) + 1) if 0 <= pos - q <= len(NEGATIVE)]
                counts.append(rng.choice(options))
        completions = [_completion(rng, pos, neg, min_words, max_words) for pos, neg in counts]
        quality = [pos - neg for pos, neg in counts]
        for labeler in range(labelers_per_prompt):
            seen = [round(q + (rng.gauss(0, noise) if noise else 0.0)) for q in quality]
            ranks = [-s for s in seen]  # lower rank = better; equal = tie
            out.append(
                Ranking(
                    prompt=prompt, completions=completions, ranks=ranks, labeler=f"labeler{labeler}", group=f"prompt{p}"
                )
            )
    return out


def synthetic_dialogue_rankings(
    n_prompts: int,
    k: int = 2,
    *,
    seed: int = 0,
    turns: int = 4,
    words_per_turn: tuple[int, int] = (25, 45),
    answer_words: tuple[int, int] = (4, 14),
) -> list[Ranking]:
    """HH-style pairwise data: a long multi-turn dialogue as the prompt ("user: ...\\nassistant: ..." lines, as
    `reward_model.reward_prompt_text` writes chat prompts), K short final answers ranked by their markers (no ties).

    The prompt is most of every input, so a reward model that runs it once per ranking saves most of the work.
    """
    levels = list(range(-len(NEGATIVE), len(POSITIVE) + 1))
    if k > len(levels):
        raise ValueError(f"k must be <= {len(levels)}, got {k}")
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        lines = []
        for turn in range(turns):
            role = "user" if turn % 2 == 0 else "assistant"
            words = " ".join(rng.choice(FILLER) for _ in range(rng.randint(*words_per_turn)))
            lines.append(f"{role}: {'Tell me about ' + rng.choice(TOPICS) + '. ' if turn == 0 else ''}{words}")
        lines.append(f"user: so what do you think about {rng.choice(TOPICS)}?")
        counts = []
        for q in rng.sample(levels, k):
            options = [(pos, pos - q) for pos in range(len(POSITIVE) + 1) if 0 <= pos - q <= len(NEGATIVE)]
            counts.append(rng.choice(options))
        completions = [_completion(rng, pos, neg, *answer_words) for pos, neg in counts]
        ranks = [neg - pos for pos, neg in counts]  # lower rank = better
        out.append(
            Ranking(
                prompt="\n".join(lines), completions=completions, ranks=ranks, labeler="labeler0", group=f"dialogue{p}"
            )
        )
    return out
