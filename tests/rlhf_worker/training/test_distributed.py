"""The one-process side of data parallelism: settings, how many processes a job gets, and a Dist of one."""

from __future__ import annotations

import pytest
import torch

from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.distributed import SINGLE, Dist, resolve_num_processes
from rlhf_worker.training.ppo import PPOConfig
from rlhf_worker.training.reward import RewardConfig
from rlhf_worker.training.sft import SFTConfig


def test_num_processes_is_checked_with_a_message_naming_the_field():
    for cls in (RewardConfig, SFTConfig, PPOConfig):
        assert cls().num_processes == 0  # automatic
        with pytest.raises(ConfigError) as err:
            cls.from_dict({"num_processes": 65})
        assert err.value.field == "num_processes"
        with pytest.raises(ConfigError) as err:
            cls.from_dict({"num_processes": -1})
        assert err.value.field == "num_processes"
    with pytest.raises(ConfigError) as err:
        RewardConfig.from_dict({"num_processes": 2, "device": "cuda:1"})
    assert err.value.field == "device" and "its own GPU" in err.value.message
    assert RewardConfig.from_dict({"num_processes": 2, "device": "cuda"}).num_processes == 2
    with pytest.raises(ConfigError) as err:
        PPOConfig.from_dict({"num_processes": 8, "batch_size": 4, "mini_batch_size": 2})
    assert err.value.field == "num_processes" and "batch_size (4)" in err.value.message


def test_a_job_gets_its_own_setting_else_the_workers_else_one_per_gpu():
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_num_processes(3, 2) == 3
    assert resolve_num_processes(0, 2) == 2
    assert resolve_num_processes(0, 0) == max(1, gpus)
    assert resolve_num_processes(0, None) == max(1, gpus)


def test_one_process_is_a_no_op_and_shards_split_rows_round_robin():
    assert SINGLE.shard([1, 2, 3]) == [1, 2, 3] and SINGLE.sum([1, 2.5]) == [1.0, 2.5] and SINGLE.any(True)
    stop = lambda: True  # noqa: E731
    assert SINGLE.stop_check(stop) is stop  # the one-process loop calls the caller's check itself
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.full((2,), 3.0)
    SINGLE.sum_gradients([param])
    assert param.grad.tolist() == [3.0, 3.0]
    rank1 = Dist(rank=1, world_size=2)
    assert rank1.shard(list(range(5))) == [1, 3] and Dist(rank=0, world_size=2).shard(list(range(5))) == [0, 2, 4]
    assert rank1.owner(3) == (1, 1) and rank1.owner(4) == (0, 2)
