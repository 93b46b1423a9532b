#!/usr/bin/env bash
# One command that runs reward, SFT and PPO training (full fine-tuning, bf16 autocast where the GPU has it) and
# generation for a few steps on CUDA, printing throughput and peak memory per stage; exits non-zero if any
# stage fails. Under 8 minutes on one GPU with the built-in models.
#
#   benchmarks/gpu_check.sh                      # on cuda (CUDA_VISIBLE_DEVICES picks the GPU)
#   benchmarks/gpu_check.sh --tiny               # the same code path on the CPU with tiny random models
#   benchmarks/gpu_check.sh --device cuda:1 --steps 4 --stages sft,ppo
#
# Options are those of benchmarks/gpu_check.py (--help). Runs .venv/bin/python, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
