"""The FSDP2 strategy on a GPU with NCCL (run by bench/gpu_check.py through `pytest -m gpu`): one rank launched as
torchrun would, its model on cuda:0, against the same run in a plain process on the same GPU. One rank shards
nothing, but every CUDA-side path of the strategy runs: the device mesh, the full-weights gather around the engine,
the lockstep update, the NCCL reduce-scatter and the checkpoint gather. More ranks need more GPUs than a GPU check
session is lent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tao_engine.rl.tao import TAO
from tests.distributed import tao_setup
from tests.distributed.launch import launch
from tests.tolerances import check

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
STEPS = 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_one_nccl_rank_with_fsdp2_matches_a_plain_process_on_the_gpu(tmp_path: Path):
    results, _ = launch(["tests.distributed.tao_worker", "--run-dir", str(tmp_path / "sharded"), "--steps",
                         str(STEPS), "--strategy", "fsdp2", "--backend", "nccl", "--device", "cuda", "--lora"],
                        world_size=1, timeout=600)
    assert results[0].returncode == 0, results[0].output[-4000:]
    config = tao_setup.config(tmp_path / "plain", STEPS, lora=True, device="cuda")
    TAO(config, model=tao_setup.model("cuda"), scorer=tao_setup.scorer(), progress=False).run(prompts=tao_setup.PROMPTS)
    for step in range(1, STEPS + 1):
        name = f"checkpoint-{step}/adapter/adapter_model.safetensors"
        a, b = load_file(str(tmp_path / "sharded" / name)), load_file(str(tmp_path / "plain" / name))
        assert a.keys() == b.keys() and a
        for key in a:
            check("data_parallel_weights", a[key], b[key])
