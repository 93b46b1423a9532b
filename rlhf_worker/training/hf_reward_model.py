"""The reward model as a transformers class, copied into every saved reward model folder as
`modeling_rlhf_reward.py`, so that plain transformers loads the folder:

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

Its logits are the app's normalised scores: the backbone's hidden state at the last attended token, the
linear head, then (raw − reward_bias) / reward_scale (both in config.json and in the weights). The weights
file is the app's own (`backbone.*`, `head.*`): no conversion. Standalone: imports only torch and transformers.
"""

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class RlhfRewardModel(PreTrainedModel):
    config_class = PretrainedConfig
    base_model_prefix = "backbone"
    _no_split_modules: list = []

    def __init__(self, config):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config)
        self.head = nn.Linear(config.hidden_size, 1, bias=getattr(config, "reward_head_bias", True))
        self.register_buffer("reward_bias", torch.tensor(float(getattr(config, "reward_bias", 0.0))))
        self.register_buffer("reward_scale", torch.tensor(float(getattr(config, "reward_scale", 1.0))))
        self.post_init()

    def _init_weights(self, module):  # every weight comes from the file
        pass

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # the last attended position of each row (any padding side), never read from token ids
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.to(positions.dtype) * (positions + 1)).argmax(dim=1)
        last_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        raw = self.head(last_hidden.to(self.head.weight.dtype)).float()
        return SequenceClassifierOutput(logits=(raw - self.reward_bias) / self.reward_scale)
