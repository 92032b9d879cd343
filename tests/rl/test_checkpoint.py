"""Checkpoints resume exactly (weights or LoRA adapter, optimizer, scheduler, every RNG, cursor), are written
atomically (a crash mid-write leaves the previous one loadable), and prune to `keep_last`."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from tao_engine.rl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from tao_engine.rl.lora import LoraConfig, apply_lora
from tao_engine.rl.optim import GuardedStep, OptimConfig, build_optimizer, build_scheduler
from tests import helpers

VOCAB = 101
TOTAL = 5  # steps of the uninterrupted run
RESUME_AT = 2


def make_run(lora: bool, model_seed: int, lora_seed: int):
    model = helpers.tiny_model(seed=model_seed)
    if lora:
        apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.2), generator=torch.Generator().manual_seed(lora_seed))
    model.train()
    cfg = OptimConfig(lr=1e-2, weight_decay=0.01, warmup_steps=1, schedule="cosine", max_grad_norm=1.0)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=TOTAL)
    return model, opt, sched, GuardedStep.from_config(opt, sched, cfg), torch.Generator().manual_seed(lora_seed)


def train_step(model, guard: GuardedStep, data_gen: torch.Generator) -> None:
    # Draw from every RNG a run may use, so a restore that misses one changes the continuation.
    rows, cols = 2 + random.randrange(2), 5 + int(np.random.randint(0, 3))
    ids = torch.randint(0, VOCAB, (rows, cols), generator=data_gen)
    weight = 1.0 + torch.rand(())  # global torch RNG (LoRA dropout draws from it too)
    logits = model.forward_padded(ids)  # [B, T, V]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)) * weight
    loss.backward()
    assert guard(loss).applied


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def assert_same_training_state(a, b) -> None:
    (model_a, opt_a, sched_a, guard_a), (model_b, opt_b, sched_b, guard_b) = a, b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert list(state_a) == list(state_b)
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    oa, ob = opt_a.state_dict(), opt_b.state_dict()
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for index, state in oa["state"].items():
        for key, value in state.items():
            assert torch.equal(ob["state"][index][key], value), (index, key)
    assert sched_a.state_dict() == sched_b.state_dict()
    assert guard_a.state_dict() == guard_b.state_dict()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_is_bit_identical(tmp_path, lora: bool) -> None:
    seed_everything(0)
    model, opt, sched, guard, data_gen = make_run(lora, model_seed=0, lora_seed=1)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(TOTAL):
        if step == RESUME_AT:
            save_checkpoint(tmp_path, step, model, opt, sched, generators={"data": data_gen},
                            data_cursor={"next_prompt": step * 3, "guard": guard.state_dict()},
                            config={"lora": lora, "lr": 1e-2}, base_model_name_or_path="tiny")
        train_step(model, guard, data_gen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(not torch.equal(model.state_dict()[n], initial[n]) for n in trainable)  # every one trained

    seed_everything(99)  # a fresh process: other RNG states, other weights (full) or adapter init (LoRA)
    fresh = make_run(lora, model_seed=0 if lora else 7, lora_seed=8)
    path = latest_checkpoint(tmp_path)
    assert path is not None and path.name == f"checkpoint-{RESUME_AT}"
    assert (path / ("adapter" if lora else "model")).is_dir()
    loaded = load_checkpoint(path, fresh[0], fresh[1], fresh[2], generators={"data": fresh[4]})
    assert (loaded.step, loaded.lora, loaded.config) == (RESUME_AT, lora, {"lora": lora, "lr": 1e-2})
    fresh[3].load_state_dict(loaded.data_cursor["guard"])
    for _ in range(RESUME_AT, TOTAL):
        train_step(fresh[0], fresh[3], fresh[4])
    assert_same_training_state((model, opt, sched, guard), fresh[:4])


class CrashingAdamW(torch.optim.AdamW):
    """Fails while the checkpoint is half written (the model files are already in the temp directory)."""

    def state_dict(self):
        raise RuntimeError("simulated crash while writing the optimizer")


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path) -> None:
    model, opt, sched, guard, data_gen = make_run(False, model_seed=3, lora_seed=0)
    train_step(model, guard, data_gen)
    save_checkpoint(tmp_path, 1, model, opt, sched, data_cursor={"at": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, guard, data_gen)  # the live weights move on
    crashing = CrashingAdamW(model.parameters())
    for step in (2, 1):  # a new step, and replacing the existing one
        with pytest.raises(RuntimeError, match="simulated crash"):
            save_checkpoint(tmp_path, step, model, crashing, sched)
        assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]  # no partial checkpoint, no temp dir
    # A killed process leaves its temp directory behind: it is ignored, then cleared by the next save.
    stale = tmp_path / ".checkpoint-3.tmp-killed"
    (stale / "model").mkdir(parents=True)
    (stale / "optimizer.pt").write_bytes(b"\x00partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"

    fresh = make_run(False, model_seed=5, lora_seed=0)
    loaded = load_checkpoint(latest_checkpoint(tmp_path), fresh[0], fresh[1], fresh[2])
    assert loaded.step == 1 and loaded.data_cursor == {"at": 1}
    assert all(torch.equal(fresh[0].state_dict()[k], v) for k, v in saved.items())

    for step in (2, 3, 4):
        save_checkpoint(tmp_path, step, model, opt, keep_last=2)
    assert not stale.exists()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    with pytest.raises(ValueError, match="saved without a scheduler"):
        load_checkpoint(tmp_path / "checkpoint-4", fresh[0], fresh[1], fresh[2])


def test_tied_model_roundtrip_and_bad_inputs(tmp_path) -> None:
    model = helpers.tiny_model(seed=2, tie_word_embeddings=True)
    opt = build_optimizer(model, OptimConfig())
    with pytest.raises(ValueError, match="data_cursor must be JSON"):
        save_checkpoint(tmp_path, 0, model, opt, data_cursor={"x": float("nan")})
    with pytest.raises(ValueError, match="lora=True"):
        save_checkpoint(tmp_path, 0, model, opt, lora=True)
    path = save_checkpoint(tmp_path, 0, model, opt)
    with safe_open(str(path / "model" / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # HF layout: the tied head is the embedding
    fresh = helpers.tiny_model(seed=3, tie_word_embeddings=True)
    load_checkpoint(path, fresh, restore_rng=False)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="without LoRA"):
        load_checkpoint(path, apply_lora(helpers.tiny_model(), LoraConfig(r=2)))
    with pytest.raises(ValueError, match="generators"):
        load_checkpoint(path, fresh, generators={"data": torch.Generator()})
