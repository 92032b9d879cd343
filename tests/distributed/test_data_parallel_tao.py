"""Data-parallel TAO on CPU with gloo: two ranks launched by torchrun end each step with the weights one process
reaches on the same global batch and seeds; metrics are reduced across ranks; only rank 0 writes; a checkpoint
written by two ranks resumes in one; a failing rank ends every rank quickly with an error that names it.

Marked slow: each launch starts fresh Python processes that import torch (several seconds each on 2 cores)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tao_engine.rl.tao import TAO
from tests.distributed import tao_setup
from tests.distributed.launch import KILLED, launch, torchrun
from tests.tolerances import check

STEPS = 2
pytestmark = pytest.mark.slow
TIMEOUT = 500  # seconds; the ranks' process-group timeout is longer (900 s), so a hang shows up as a kill
BUDGET = 4096  # one micro-batch of all four groups in one process; two groups per rank: a different packing


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """A 2-step run on 2 ranks through torchrun; rank r writes under run/rank<r> (only rank 0 should)."""
    base = tmp_path_factory.mktemp("two_ranks")
    done = torchrun(["tests.distributed.tao_worker", "--run-dir", str(base / "run"), "--steps", str(STEPS),
                     "--max-tokens-per-forward", str(BUDGET), "--rank-dirs", "--result", str(base / "history")],
                    nproc=2, timeout=TIMEOUT)
    assert done.returncode == 0, done.output[-6000:]
    return base


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one_process") / "run"
    tao = TAO(tao_setup.config(run_dir, STEPS, max_tokens_per_forward=BUDGET), model=tao_setup.model(),
              scorer=tao_setup.scorer(), progress=False)
    tao.run(prompts=tao_setup.PROMPTS)
    return run_dir


def _weights(run_dir, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / f"checkpoint-{step}" / "model" / "model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        check("data_parallel_weights", a[name], b[name])


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_end_each_step_with_the_weights_of_one_process(two_ranks, one_process):
    initial = {k: v.detach() for k, v in tao_setup.model().state_dict().items()}
    for step in range(1, STEPS + 1):
        two = _weights(two_ranks / "run" / "rank0", step)
        _assert_same_weights(two, _weights(one_process, step))
        changed = [k for k in two if k in initial and not torch.equal(two[k], initial[k])]
        assert len(changed) > len(two) // 2  # the step really moved the weights (not a trivial equality)


def test_metrics_are_reduced_across_ranks_and_only_rank_0_writes(two_ranks, one_process):
    assert not (two_ranks / "run" / "rank1").exists()
    rank0 = two_ranks / "run" / "rank0"
    assert (rank0 / "final" / "config.json").is_file() and (rank0 / "reward_mean.png").is_file()
    two, one = _records(rank0), _records(one_process)
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    for a, b in zip(two, one, strict=True):
        assert a["generated_tokens"] == b["generated_tokens"] == 4 * 4 * 5  # summed over ranks: the whole batch
        assert a["tokens"] == b["tokens"]
        for key in ("reward_mean", "reward_std", "advantage_abs_mean", "groups_trained", "grad_norm", "loss"):
            check("data_parallel_metrics", torch.tensor(a[key]), torch.tensor(b[key], dtype=torch.float64))
    histories = [json.loads((two_ranks / f"history.{r}").read_text()) for r in range(2)]
    assert histories[0] == histories[1]  # every rank holds the same reduced record


def test_a_checkpoint_from_two_ranks_resumes_in_one_process(two_ranks, tmp_path):
    run_dir = tmp_path / "resumed"
    shutil.copytree(two_ranks / "run" / "rank0", run_dir)
    for name in (f"checkpoint-{STEPS}", "final"):
        shutil.rmtree(run_dir / name)
    tao = TAO(tao_setup.config(run_dir, STEPS, max_tokens_per_forward=BUDGET), model=tao_setup.model(),
              scorer=tao_setup.scorer(), progress=False)
    tao.run(prompts=tao_setup.PROMPTS, resume=True)
    _assert_same_weights(_weights(run_dir, STEPS), _weights(two_ranks / "run" / "rank0", STEPS))
    assert [r["step"] for r in _records(run_dir)] == list(range(1, STEPS + 1))


def test_a_failing_rank_stops_every_rank_with_a_clear_error(tmp_path):
    # Plain processes, no torchrun agent to kill the healthy rank: it must stop on its own.
    results, _ = launch(["tests.distributed.tao_worker", "--run-dir", str(tmp_path / "run"), "--steps", "2",
                         "--fail-rank", "1"], world_size=2, timeout=TIMEOUT)
    # Each rank exited by itself (not killed at the timeout) with an error status.
    assert all(r.returncode not in (0, KILLED) for r in results), [r.returncode for r in results]
    assert "injected scorer failure" in results[1].output and "raised on rank 1 of 2" in results[1].output
    healthy = results[0].output
    assert "RankFailure" in healthy and "rank 1: ScoringError" in healthy and "injected scorer failure" in healthy


def test_dapo_refills_split_unevenly_across_ranks_and_match_one_process(tmp_path):
    # A rare reward leaves whole groups at 0: DAPO drops them and refills with fewer prompts than ranks * k.
    results, _ = launch(["tests.distributed.tao_worker", "--run-dir", str(tmp_path / "two"), "--steps", str(STEPS),
                         "--algorithm", "dapo", "--rare-reward"], world_size=2, timeout=TIMEOUT)
    assert [r.returncode for r in results] == [0, 0], results[0].output[-3000:] + results[1].output[-3000:]
    tao = TAO(tao_setup.config(tmp_path / "one", STEPS, algorithm="dapo"), model=tao_setup.model(),
              scorer=tao_setup.scorer(rare=True), progress=False)
    tao.run(prompts=tao_setup.PROMPTS)
    two, one = _records(tmp_path / "two"), _records(tmp_path / "one")
    assert sum(r["resample_rounds"] for r in one) > 0  # the refill path really ran
    for a, b in zip(two, one, strict=True):
        for key in ("resample_rounds", "groups_trained", "generated_tokens", "reward_mean"):
            check("one_rank_metrics", torch.tensor(a[key]), torch.tensor(b[key], dtype=torch.float64))
    for step in range(1, STEPS + 1):
        _assert_same_weights(_weights(tmp_path / "two", step), _weights(tmp_path / "one", step))
