"""Packing a PPO batch for the policy forward: no padding, and a prompt prefix every row shares runs once.

A PPO batch is left-padded queries followed by right-padded responses, so each row's real tokens
form one contiguous span. With a chat template every query also starts with the same system turn
(~20 tokens for SmolLM2, a third of a short prompt + response). `pack_rows` lays the batch out as a
few "bins", each one sequence of

    [shared prefix][row a's own tokens][row b's own tokens]...[padding]

with position ids that restart after the prefix for every row, and a block attention mask in which
each row sees the prefix and itself (causally) and nothing else. The transformer then computes
exactly what it computes on the padded batch (same positions, same visible keys), on fewer tokens,
and the prefix's gradient is the sum over the rows that read it, as before. Bins are capped at
`bin_tokens` because the dense mask costs attention work quadratic in a bin's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PREFIX_SEGMENT = -1
PAD_SEGMENT = -2


def common_prefix_length(query_ids: torch.Tensor, query_mask: torch.Tensor) -> int:
    """How many leading tokens every (left-padded) query shares, leaving each row at least one of its own."""
    lengths = query_mask.long().sum(1)
    room = int(lengths.min()) - 1
    if query_ids.shape[0] < 2 or room < 1:
        return 0
    starts = query_ids.shape[1] - lengths
    aligned = query_ids.gather(1, starts[:, None] + torch.arange(room, device=query_ids.device)[None])
    same = (aligned == aligned[:1]).all(0)
    return room if bool(same.all()) else int(same.long().argmin())


@dataclass
class PackedRows:
    """Where every packed token comes from and where every wanted hidden state goes."""

    source: torch.Tensor  # [G, N] index into the flattened [B * (Lq + T)] batch (padding slots: 0)
    position_ids: torch.Tensor  # [G, N]
    segment: torch.Tensor  # [G, N] row index, PREFIX_SEGMENT or PAD_SEGMENT
    out_index: torch.Tensor  # [B, T] index into the flattened [G * N] packed hidden states
    out_valid: torch.Tensor  # [B, T] bool: False where the response has ended (hidden state left at 0)
    prefix: int

    @property
    def tokens(self) -> int:
        return int((self.segment != PAD_SEGMENT).sum())

    def attention_mask(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[G, 1, N, N]: boolean (True = may attend), or additive in `dtype` for eager attention."""
        return block_attention_mask(self.segment, dtype)


def block_attention_mask(segment: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[G, 1, N, N] causal mask in which each segment sees the prefix and itself only.

    Boolean (True = may attend), or additive in `dtype` for eager attention.
    """
    n = segment.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segment.device).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    allowed = causal[None] & ((seg_k == seg_q) | (seg_k == PREFIX_SEGMENT))
    allowed = allowed[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def pack_rows(
    query_ids: torch.Tensor, query_mask: torch.Tensor, response_mask: torch.Tensor, bin_tokens: int = 384
) -> PackedRows:
    """Pack rows (query tail + response, minus the last response token, which predicts nothing we need).

    The hidden state wanted for response token t of row i is the one at the token before it; those
    land in `out_index[i, t]`.
    """
    device = query_ids.device
    batch, query_len = query_ids.shape
    steps = response_mask.shape[1]
    width = query_len + steps
    prefix = common_prefix_length(query_ids, query_mask)
    starts = (query_len - query_mask.long().sum(1)).tolist()
    ends = (query_len + response_mask.long().sum(1) - 1).tolist()  # exclusive; drops the last response token
    # each row's own columns [begin, end): after the shared prefix, up to at least the last query token
    spans = [(start + prefix, max(end, query_len)) for start, end in zip(starts, ends)]
    prefix_source = torch.arange(starts[0], starts[0] + prefix, device=device)

    bins: list[list[int]] = []
    lengths: list[int] = []
    for row, (begin, end) in enumerate(spans):
        own = end - begin
        if not bins or (lengths[-1] + own > bin_tokens and len(bins[-1]) > 0):
            bins.append([])
            lengths.append(prefix)
        bins[-1].append(row)
        lengths[-1] += own
    n = max(lengths)
    groups = len(bins)
    source = torch.zeros(groups, n, dtype=torch.long, device=device)
    position_ids = torch.zeros(groups, n, dtype=torch.long, device=device)
    segment = torch.full((groups, n), PAD_SEGMENT, dtype=torch.long, device=device)
    out_index = torch.zeros(batch, steps, dtype=torch.long, device=device)
    out_valid = response_mask.bool().clone()
    for g, rows in enumerate(bins):
        source[g, :prefix] = prefix_source
        position_ids[g, :prefix] = torch.arange(prefix, device=device)
        segment[g, :prefix] = PREFIX_SEGMENT
        at = prefix
        for row in rows:
            begin, end = spans[row]
            own = end - begin
            source[g, at : at + own] = row * width + torch.arange(begin, end, device=device)
            position_ids[g, at : at + own] = torch.arange(prefix, prefix + own, device=device)
            segment[g, at : at + own] = row
            # response token t is predicted at column query_len - 1 + t, i.e. packed slot at + (that - begin)
            out_index[row] = (
                g * n
                + at
                + (query_len - 1 - begin)
                + torch.arange(steps, device=device).clamp(max=own - 1 - (query_len - 1 - begin))
            )
            at += own
        # padding slots: positions keep counting so every position id stays in range
        position_ids[g, at:] = torch.arange(n - at, device=device)
    return PackedRows(
        source=source,
        position_ids=position_ids,
        segment=segment,
        out_index=out_index,
        out_valid=out_valid,
        prefix=prefix,
    )


# --------------------------------------------------------------------------------------------- reward rankings


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Leading tokens all `sequences` share, leaving each at least one of its own (0 for fewer than two)."""
    if len(sequences) < 2:
        return 0
    room = min(len(s) for s in sequences) - 1
    first = sequences[0]
    for i in range(max(0, room)):
        if any(s[i] != first[i] for s in sequences[1:]):
            return i
    return max(0, room)


def packed_group_length(sequences: list[list[int]]) -> int:
    """Tokens of one packed group: the shared prefix once plus each sequence's own tail."""
    prefix = shared_prefix_length(sequences)
    return prefix + sum(len(s) - prefix for s in sequences)


@dataclass
class PackedGroups:
    """Groups of sequences (a ranking's K completions, prompt included), one packed row per group.

    Row g is [shared prefix][sequence 0's own tokens][sequence 1's own tokens]...[padding]; every
    sequence's position ids continue from the prefix's end and it attends to the prefix and itself
    (`block_attention_mask(segment)`), so each sequence's hidden states are the ones it gets alone.
    """

    input_ids: torch.Tensor  # [G, N]
    position_ids: torch.Tensor  # [G, N]
    segment: torch.Tensor  # [G, N] index of the sequence within its group, PREFIX_SEGMENT or PAD_SEGMENT
    last_index: torch.Tensor  # [S] flat index into [G * N] of each sequence's last token (groups in order)

    @property
    def tokens(self) -> int:
        return int((self.segment != PAD_SEGMENT).sum())


def pack_groups(groups: list[list[list[int]]], pad_token_id: int) -> PackedGroups:
    """Pack each group into one row (the prefix all its sequences share computed once), right-padded."""
    prefixes = [shared_prefix_length(group) for group in groups]
    n = max(packed_group_length(group) for group in groups)
    input_ids = torch.full((len(groups), n), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(groups), n), dtype=torch.long)
    segment = torch.full((len(groups), n), PAD_SEGMENT, dtype=torch.long)
    last_index = []
    for g, (group, prefix) in enumerate(zip(groups, prefixes)):
        input_ids[g, :prefix] = torch.as_tensor(group[0][:prefix], dtype=torch.long)
        position_ids[g, :prefix] = torch.arange(prefix)
        segment[g, :prefix] = PREFIX_SEGMENT
        at = prefix
        for index, sequence in enumerate(group):
            own = len(sequence) - prefix
            input_ids[g, at : at + own] = torch.as_tensor(sequence[prefix:], dtype=torch.long)
            position_ids[g, at : at + own] = torch.arange(prefix, prefix + own)
            segment[g, at : at + own] = index
            at += own
            last_index.append(g * n + at - 1)
        position_ids[g, at:] = torch.arange(n - at)  # padding: positions stay in range
    return PackedGroups(input_ids, position_ids, segment, torch.tensor(last_index, dtype=torch.long))
