"""LoRA on our decoder: identity at init, only adapters train, merge/unmerge, peft-format adapters that peft loads
(and that we load from peft) with equal logits, and generation through the engine from the wrapped module."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.models import ModelConfig, get_model_class
from tao_engine.models.loading import load_model
from tao_engine.models.saving import save_pretrained
from tao_engine.reference_generate import generate_tokens
from tao_engine.rl.lora import (
    LORA_TARGETS,
    LoraConfig,
    LoraLinear,
    apply_lora,
    is_merged,
    lora_config_of,
    lora_disabled,
    lora_layers,
    merge_lora,
    merged_state_dict,
    unmerge_lora,
)
from tao_engine.rl.lora_adapter import (
    ADAPTER_CONFIG,
    load_lora_adapter,
    lora_state_dict,
    save_lora_adapter,
)
from tests import helpers
from tests.tolerances import check

LENGTHS = [7, 13, 1]
VOCAB = 101


def logits(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    ids, mask, _ = helpers.padded_batch(LENGTHS, VOCAB, left=False, seed=seed)
    with torch.no_grad():
        return model.forward_padded(ids, mask)[mask.bool()]  # [N, V]


def assert_logits(got: torch.Tensor, expected: torch.Tensor, model: torch.nn.Module) -> None:
    """Two fp32 computations of `model`'s logits (merged or not, reloaded, another library): within the whole-model
    bound (tests/bounds/model.py), computed on the merged function (the bound's fp64 copy cannot run fp32 adapters)."""
    has_adapters = any(k.endswith("lora_A") for k in model.state_dict())
    merged = merge_lora(copy.deepcopy(model)) if has_adapters and not is_merged(model) else model
    check("model_outputs", got, expected, model=merged, outputs=logits)


@torch.no_grad()
def randomize_adapters_(model: torch.nn.Module, seed: int) -> None:
    """B is zero at init; give it values that change the logits clearly."""
    gen = torch.Generator().manual_seed(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.copy_(0.2 * torch.randn(layer.lora_B.shape, generator=gen))


@pytest.mark.parametrize("bad", [
    {"r": 0}, {"r": 2.0}, {"alpha": 0}, {"alpha": float("nan")}, {"dropout": 1.0}, {"dropout": -0.1},
    {"target_modules": ["lm_head"]}, {"target_modules": []}, {"target_modules": "q_proj"},
])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="LoraConfig"):
        LoraConfig(**bad)


def test_config_from_dict() -> None:
    cfg = LoraConfig.from_dict({"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "q_proj"]})
    assert cfg.target_modules == ("q_proj", "v_proj") and cfg.scale == 2.0
    assert LoraConfig(target_modules="all-linear").target_modules == LORA_TARGETS
    with pytest.raises(ValueError, match="unknown key"):
        LoraConfig.from_dict({"rank": 4})


@pytest.mark.parametrize("case", ["llama3_rope_bias", "qwen3"])
def test_apply_keeps_outputs_and_trains_only_adapters(case: str) -> None:
    config = ModelConfig.from_dict(helpers.hf_config(case).to_dict())  # biases (llama3 case) and q/k norms (qwen3)
    model = get_model_class(config)(config).eval()
    helpers.randomize_(model, seed=1)
    before = logits(model)
    base_names = set(model.state_dict())
    apply_lora(model, LoraConfig(r=3, alpha=6), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(model), before, atol=0, rtol=0)  # B = 0: exactly the same output
    layers = lora_layers(model)
    assert len(layers) == 7 * model.config.num_hidden_layers
    assert base_names < set(model.state_dict())  # base names unchanged, adapters added
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{m}.{x}" for m in layers for x in ("lora_A", "lora_B")}
    assert all(torch.count_nonzero(m.lora_A) > 0 and torch.count_nonzero(m.lora_B) == 0 for m in layers.values())

    ids, mask, _ = helpers.padded_batch(LENGTHS, VOCAB, left=True, seed=3)
    model.forward_padded(ids, mask)[mask.bool()].logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
        elif not name.endswith("lora_A"):
            assert p.grad is None, name


def test_dropout_only_in_training() -> None:
    model = apply_lora(helpers.tiny_model(seed=2), LoraConfig(r=4, alpha=4, dropout=0.5))
    randomize_adapters_(model, 0)
    eval_out = logits(model)
    torch.testing.assert_close(logits(model), eval_out, atol=0, rtol=0)
    model.train()
    assert not torch.allclose(logits(model), eval_out, atol=1e-3)


def test_apply_twice_or_on_nothing_fails() -> None:
    model = apply_lora(helpers.tiny_model(), LoraConfig(r=2))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, LoraConfig(r=2))
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(torch.nn.Sequential(torch.nn.Linear(3, 3)), LoraConfig(r=2))


def test_merge_gives_hf_state_dict_and_unmerge_restores(tmp_path) -> None:
    model = helpers.tiny_model(seed=4)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "o_proj", "up_proj"]))
    randomize_adapters_(model, 1)
    adapted = logits(model)
    assert (adapted - logits(helpers.tiny_model(seed=4))).abs().max() > 1e-2  # the adapters matter

    with lora_disabled(model):  # the base model's outputs, e.g. for a KL reference
        torch.testing.assert_close(logits(model), logits(helpers.tiny_model(seed=4)), atol=0, rtol=0)
    torch.testing.assert_close(logits(model), adapted, atol=0, rtol=0)
    torch.testing.assert_close(logits(copy.deepcopy(model)), adapted, atol=0, rtol=0)  # copies and pickles

    unmerged = copy.deepcopy(model)
    merge_lora(model)
    assert is_merged(model)
    assert list(model.state_dict()) == list(original)  # exactly the HF names, in order
    assert_logits(logits(model), adapted, model)
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    # A merged save is a plain HF model that loads without any LoRA code.
    reloaded = load_model(save_pretrained(model, tmp_path / "merged"))
    assert_logits(logits(reloaded), adapted, reloaded)

    unmerge_lora(model)
    assert not is_merged(model) and any(k.endswith("lora_A") for k in model.state_dict())
    state = model.state_dict()
    for name, tensor in original.items():
        layer = name.removesuffix(".weight")
        if f"{layer}.lora_A" in state:  # W + s B A - s B A: two roundings of the sum, two of s B A (a product of r)
            lora = unmerged.get_submodule(layer)
            check("lora_roundtrip", state[name], tensor, weight=tensor, lora_a=lora.lora_A, lora_b=lora.lora_B,
                  scale=lora.scale)
        else:
            assert torch.equal(state[name], tensor), name
    assert_logits(logits(model), adapted, unmerged)


def test_merged_state_dict_equals_merge_lora_and_leaves_the_model_alone(tmp_path) -> None:
    # The path of a sharded (FSDP2) run: the gathered state dict is merged, never the module.
    model = helpers.tiny_model(seed=4)
    apply_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "o_proj", "up_proj"]))
    randomize_adapters_(model, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_state_dict(model, state)
    assert not is_merged(model) and torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.lora_B"],
                                                state["model.layers.0.self_attn.q_proj.lora_B"])
    expected = merge_lora(model).state_dict()
    assert list(merged) == list(expected)  # the HF names, in order, adapters folded away
    for name, tensor in expected.items():
        assert torch.equal(merged[name], tensor), name  # the very arithmetic of LoraLinear.merge
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           state["model.layers.0.self_attn.q_proj.weight"])
    unmerge_lora(model)
    saved = load_model(save_pretrained(model, tmp_path / "from_state", state=merged))  # written from the state
    assert_logits(logits(saved), logits(model), model)
    with pytest.raises(ValueError, match="merged_state_dict"):
        merged_state_dict(helpers.tiny_model(seed=4), state)


def hf_and_ours(seed: int):
    hf = helpers.make_hf_model("llama", seed=seed)
    config = ModelConfig.from_dict(hf.config.to_dict())
    ours = get_model_class(config)(config).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


def peft_logits(peft_model, seed: int = 0) -> torch.Tensor:
    ids, mask, positions = helpers.padded_batch(LENGTHS, VOCAB, left=False, seed=seed)
    with torch.no_grad():
        return peft_model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[mask.bool()]


def test_our_adapter_loads_in_peft_with_equal_logits(tmp_path) -> None:
    peft = pytest.importorskip("peft")
    hf, ours = hf_and_ours(seed=5)
    apply_lora(ours, LoraConfig(r=4, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj", "gate_proj",
                                                                            "down_proj"]))
    randomize_adapters_(ours, 2)
    adapter = save_lora_adapter(ours, tmp_path / "adapter", base_model_name_or_path="tiny-llama")
    body = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert body["peft_type"] == "LORA" and body["task_type"] == "CAUSAL_LM" and body["r"] == 4
    assert body["lora_alpha"] == 16 and body["base_model_name_or_path"] == "tiny-llama"
    assert not list(tmp_path.glob(".*"))  # no temp directory left behind

    base = peft_logits(hf)
    peft_model = peft.PeftModel.from_pretrained(hf, adapter).eval()
    expected = peft_logits(peft_model)
    assert (expected - base).abs().max() > 1e-2  # peft really applied the adapter
    assert_logits(logits(ours), expected, ours)


def test_peft_adapter_loads_in_ours_with_equal_logits(tmp_path) -> None:
    peft = pytest.importorskip("peft")
    hf, ours = hf_and_ours(seed=6)
    config = peft.LoraConfig(r=2, lora_alpha=5, target_modules=["k_proj", "o_proj", "up_proj"],
                             task_type="CAUSAL_LM", init_lora_weights=False)  # random A and B
    peft_model = peft.get_peft_model(hf, config).eval()
    peft_model.save_pretrained(tmp_path / "from_peft")
    load_lora_adapter(ours, tmp_path / "from_peft")
    assert lora_config_of(ours) == LoraConfig(r=2, alpha=5, target_modules=("k_proj", "o_proj", "up_proj"))
    assert_logits(logits(ours), peft_logits(peft_model), ours)


def test_save_load_roundtrip_and_mismatches(tmp_path) -> None:
    source = apply_lora(helpers.tiny_model(seed=7), LoraConfig(r=3, alpha=3, target_modules=["v_proj"]))
    randomize_adapters_(source, 3)
    adapter = save_lora_adapter(source, tmp_path / "a")
    save_lora_adapter(source, tmp_path / "a")  # overwriting an existing adapter works
    target = load_lora_adapter(helpers.tiny_model(seed=7), adapter)
    for key, value in lora_state_dict(source).items():
        assert torch.equal(lora_state_dict(target)[key], value), key
    assert isinstance(target.model.layers[0].self_attn.v_proj, LoraLinear)

    other_rank = apply_lora(helpers.tiny_model(seed=7), LoraConfig(r=5, alpha=3, target_modules=["v_proj"]))
    with pytest.raises(ValueError, match="r=3"):
        load_lora_adapter(other_rank, adapter)
    body = json.loads((adapter / ADAPTER_CONFIG).read_text())
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({**body, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        load_lora_adapter(helpers.tiny_model(seed=7), adapter)
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({**body, "target_modules": ["v_proj", "k_proj"]}))
    with pytest.raises(ValueError, match="missing"):
        load_lora_adapter(helpers.tiny_model(seed=7), adapter)


def test_engine_generates_from_the_lora_module() -> None:
    model = apply_lora(helpers.tiny_model(seed=8, eos_token_id=VOCAB - 1), LoraConfig(r=4, alpha=8))
    randomize_adapters_(model, 4)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, VOCAB - 1, (n,), generator=gen).tolist() for n in (5, 11, 2)]
    engine = Engine(model, EngineConfig(kv_cache_bytes=2**20, block_size=4))
    params = SamplingParams(temperature=0, max_tokens=8)
    outs = [o.samples[0].token_ids for o in engine.generate(prompts, params)]
    expected = [generate_tokens(model, p, 8, stop_ids={VOCAB - 1}) for p in prompts]
    assert outs == expected
    base = helpers.tiny_model(seed=8, eos_token_id=VOCAB - 1)
    assert expected != [generate_tokens(base, p, 8, stop_ids={VOCAB - 1}) for p in prompts]  # LoRA is in play
    merge_lora(model)  # the engine sees the merged weights (same module) and generates the same tokens
    assert [o.samples[0].token_ids for o in engine.generate(prompts, params)] == outs
