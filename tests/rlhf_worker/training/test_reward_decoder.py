"""Decoder reward model: kind detection, the packed K-wise forward (prompt once) equals per-completion passes,
policy initialisation, and the saved folder that plain transformers loads natively with the app's scores."""

import json

import pytest
import torch

from rlhf_worker.training.packing import PAD_SEGMENT, PREFIX_SEGMENT, pack_groups
from rlhf_worker.training.policy_models import save_tiny_policy, tiny_policy
from rlhf_worker.training.reward import EncodedRanking, RewardConfig, _encode, batch_rewards, collate_rankings, train
from rlhf_worker.training.reward_model import (
    DECODER,
    ENCODER,
    RewardModel,
    RewardScorer,
    detect_backbone_kind,
    encode_example,
    load_for_training,
    minilm_tokenizer,
    pad_batch,
    resolve_backbone_kind,
    save_tiny_backbone,
    tiny_backbone,
)
from rlhf_worker.training.synthetic import synthetic_rankings

torch.set_num_threads(1)

LONG_PROMPT = (
    "user: tell me about the river and the old mill near the garden. assistant: it was built long ago. user: why"
)


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


def test_backbone_kind_is_detected_from_the_architecture(tokenizer, tmp_path):
    assert detect_backbone_kind(tiny_backbone("bert", tokenizer=tokenizer)[0].config) == ENCODER
    assert detect_backbone_kind(tiny_backbone("llama", tokenizer=tokenizer)[0].config) == DECODER
    policy, _ = tiny_policy()
    assert detect_backbone_kind(policy.config) == DECODER
    bert_config = tiny_backbone("bert", tokenizer=tokenizer)[0].config
    with pytest.raises(ValueError, match="not a causal language model"):
        resolve_backbone_kind(bert_config, DECODER)
    assert resolve_backbone_kind(policy.config, ENCODER) == ENCODER  # allowed: one padded pass per completion
    with pytest.raises(ValueError, match="backbone_kind"):
        resolve_backbone_kind(policy.config, "sideways")


def test_pack_groups_layout_shares_the_prompt_once():
    groups = [[[1, 2, 3, 4, 5], [1, 2, 3, 9]], [[7, 8], [7, 6, 6], [7, 5]]]
    packed = pack_groups(groups, pad_token_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 9], [7, 8, 6, 6, 5, 0]]
    assert packed.segment.tolist() == [[PREFIX_SEGMENT] * 3 + [0, 0, 1], [PREFIX_SEGMENT, 0, 1, 1, 2, PAD_SEGMENT]]
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3]  # each completion continues from the prompt's end
    assert packed.position_ids[1].tolist()[:5] == [0, 1, 1, 2, 1]
    assert packed.last_index.tolist() == [4, 5, 6 + 1, 6 + 3, 6 + 4]
    assert packed.tokens == 6 + 5


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_scores_and_gradients_equal_one_pass_per_completion(attention, tokenizer):
    backbone, tok = tiny_backbone("llama", tokenizer=tokenizer, seed=2)
    backbone.config._attn_implementation = attention
    model = RewardModel(backbone, kind=DECODER).eval()
    assert model.packs_rankings
    rankings = [
        EncodedRanking(
            [encode_example(tok, LONG_PROMPT, c, 128)[0] for c in ("yes, because", "no idea at all sorry")], [(0, 1)]
        ),
        EncodedRanking(
            [encode_example(tok, "short one", c, 128)[0] for c in ("a", "b b", "c c c c")], [(0, 1), (0, 2), (1, 2)]
        ),
    ]
    packed = collate_rankings(rankings, tok.pad_token_id, packed=True)
    padded = collate_rankings(rankings, tok.pad_token_id)
    assert packed.input_ids.numel() < padded.input_ids.numel()
    prompt_tokens = len(encode_example(tok, LONG_PROMPT, "", 128)[0]) - 2
    assert packed.input_ids.shape[1] < sum(len(s) for s in rankings[0].ids) - prompt_tokens // 2

    def scores_and_grads(batch):
        model.zero_grad()
        rewards = batch_rewards(model, batch, torch.device("cpu"))
        rewards.sum().backward()
        return rewards.detach(), model.head.weight.grad.clone(), backbone.layers[0].self_attn.q_proj.weight.grad.clone()

    packed_out, padded_out = scores_and_grads(packed), scores_and_grads(padded)
    # and the reference: each (prompt, completion) alone, no padding at all
    alone = torch.stack([model(*pad_batch([ids], tok.pad_token_id)).detach()[0] for r in rankings for ids in r.ids])
    torch.testing.assert_close(packed_out[0], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded_out[0], alone, atol=1e-5, rtol=1e-4)
    for got, want in zip(packed_out[1:], padded_out[1:]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_policy_folder_initialises_the_decoder_trunk(tmp_path):
    policy_dir = save_tiny_policy(str(tmp_path / "policy"), seed=4)
    policy, _ = tiny_policy(seed=4)
    model, tok = load_for_training(policy_dir)
    assert model.kind == DECODER and model.head.bias is None
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, policy.model.state_dict()[name], msg=name)
    assert tok.chat_template  # the policy's own template formats the reward model's inputs


@pytest.fixture(scope="module")
def trained_decoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoder")
    backbone_dir = save_tiny_backbone(folder / "tiny-llama", "llama", seed=0)
    rankings = synthetic_rankings(24, 3, seed=5, ties=False, max_words=8)
    cfg = RewardConfig(
        backbone=backbone_dir,
        learning_rate=2e-3,
        epochs=1,
        batch_size=4,
        max_length=64,
        eval_fraction=0.25,
        eval_every=0,
        save_every=0,
        device="cpu",
        seed=0,
    )
    return train(cfg, rankings, out_dir=folder / "run"), rankings


def test_decoder_run_saves_the_layout_plain_transformers_loads_with_the_apps_scores(trained_decoder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForSequenceClassification

    result, rankings = trained_decoder
    assert result.model_dir and "eval/accuracy" in result.metrics
    saved = json.loads(open(f"{result.model_dir}/config.json").read())
    assert saved["architectures"] == ["LlamaForSequenceClassification"] and "auto_map" not in saved
    assert saved["reward_scale"] == pytest.approx(result.scale) and saved["reward_bias"] == pytest.approx(result.bias)

    hf = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()  # no trust_remote_code
    assert isinstance(hf, LlamaForSequenceClassification)
    hf_tok = AutoTokenizer.from_pretrained(result.model_dir)
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    prompts = [r.prompt for r in rankings[:4] for _ in r.completions]
    completions = [c for r in rankings[:4] for c in r.completions]
    app = scorer.score(prompts, completions)
    ids, mask = pad_batch(
        [encode_example(hf_tok, p, c, 64)[0] for p, c in zip(prompts, completions)], hf_tok.pad_token_id
    )
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    plain = (logits - hf.config.reward_bias) / hf.config.reward_scale
    torch.testing.assert_close(plain, app, atol=1e-4, rtol=1e-4)
    assert float(app.std()) > 0.1  # the model really scores differently


def test_decoder_reward_model_trains_with_lora_and_resumes(tmp_path):
    backbone_dir = save_tiny_backbone(tmp_path / "tiny-llama", "llama", seed=1)
    rankings = synthetic_rankings(16, 2, seed=6, ties=False, max_words=6)
    cfg = RewardConfig(
        backbone=backbone_dir,
        learning_rate=2e-3,
        epochs=2,
        batch_size=4,
        max_length=64,
        eval_fraction=0.0,
        save_every=1,
        device="cpu",
        adapter="lora",
        lora_rank=4,
    )
    calls = []
    stopped = train(cfg, rankings, out_dir=tmp_path / "run", should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert stopped.stopped and stopped.step == 3
    done = train(cfg, rankings, out_dir=tmp_path / "run", resume_from=tmp_path / "run")
    assert done.model_dir and done.step == done.total_steps == 8
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(done.model_dir).config.architectures == [
        "LlamaForSequenceClassification"
    ]
    assert (tmp_path / "run" / "model" / "adapter" / "adapter_config.json").is_file()


def test_a_decoder_run_encodes_each_completion_with_the_prompt(tokenizer):
    rankings = synthetic_rankings(2, 2, seed=1, ties=False)
    encoded, _ = _encode(rankings, tokenizer, 64)
    assert all(e.packed_length < sum(len(s) for s in e.ids) for e in encoded)


def test_a_saved_decoder_reward_model_continues_training_from_its_weights(trained_decoder, tmp_path):
    result, rankings = trained_decoder
    model, _ = load_for_training(result.model_dir)
    assert model.kind == DECODER and float(model.reward_scale) == 1.0  # normalisation reset for the new run
    before = RewardModel.from_pretrained(result.model_dir).head.weight
    torch.testing.assert_close(model.head.weight, before)
    with pytest.raises(ValueError, match="choose auto"):
        load_for_training(result.model_dir, ENCODER)
    cfg = RewardConfig(
        backbone=result.model_dir,
        learning_rate=1e-3,
        epochs=1,
        batch_size=8,
        max_length=64,
        eval_fraction=0.0,
        device="cpu",
    )
    again = train(cfg, rankings, out_dir=tmp_path / "again")
    assert read_kind(again.model_dir) == DECODER


def read_kind(folder):
    return json.loads(open(f"{folder}/reward_config.json").read())["backbone_kind"]
