"""Our decoder against transformers' eager implementation, on tiny random models of every supported architecture."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from tao_engine.forward_batch import ForwardBatch
from tao_engine.models import DecoderForCausalLM, ModelConfig, build_model, get_model_class
from tests.helpers import HF_CASES, make_hf_model, padded_batch
from tests.tolerances import check

LENGTHS = [7, 13, 1]


@pytest.fixture(scope="module", params=sorted(HF_CASES))
def pair(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, DecoderForCausalLM]:
    """(case, transformers model, our model holding the same weights)."""
    hf = make_hf_model(request.param, seed=len(request.param))
    config = ModelConfig.from_dict(hf.config.to_dict())
    ours = get_model_class(config)(config).eval()
    ours.load_state_dict(hf.state_dict())
    return request.param, hf, ours


@torch.no_grad()
def hf_logits(hf: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits


def test_state_dict_names_and_shapes_match(pair: tuple[str, torch.nn.Module, DecoderForCausalLM]) -> None:
    _, hf, ours = pair
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs
    assert list(ours.buffers()) == []


@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
def test_forward_padded_matches_transformers(pair: tuple[str, torch.nn.Module, DecoderForCausalLM], left: bool) -> None:
    _, hf, ours = pair
    ids, mask, positions = padded_batch(LENGTHS, ours.config.vocab_size, left=left, seed=int(left))
    expected = hf_logits(hf, ids, mask, positions)
    with torch.no_grad():
        got = ours.forward_padded(ids, mask)
    keep = mask.bool()
    assert got.shape == expected.shape
    check("model_outputs", got[keep], expected[keep], model=ours, outputs=lambda m: m.forward_padded(ids, mask)[keep])
    assert torch.count_nonzero(got[~keep]) == 0, "padding positions must hold zero logits"


def test_packed_forward_matches_transformers(pair: tuple[str, torch.nn.Module, DecoderForCausalLM]) -> None:
    _, hf, ours = pair
    ids, mask, positions = padded_batch(LENGTHS, ours.config.vocab_size, left=False, seed=2)
    expected = hf_logits(hf, ids, mask, positions)[mask.bool()]  # [N, V], sequences concatenated
    batch = ForwardBatch.for_sequences(LENGTHS)
    with torch.no_grad():
        hidden = ours(ids[mask.bool()], batch)
        got = ours.compute_logits(hidden)
    assert hidden.shape == (sum(LENGTHS), ours.config.hidden_size)
    check("model_outputs", got, expected, model=ours, outputs=lambda m: m.compute_logits(m(ids[mask.bool()], batch)))


def test_unpadded_batch_and_equal_lengths(pair: tuple[str, torch.nn.Module, DecoderForCausalLM]) -> None:
    # Equal lengths take the batched attention path; no mask means every token is real.
    _, hf, ours = pair
    ids = torch.randint(0, ours.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        got = ours.forward_padded(ids)
    check("model_outputs", got, expected, model=ours, outputs=lambda m: m.forward_padded(ids))


def test_bf16_close_to_fp32(pair: tuple[str, torch.nn.Module, DecoderForCausalLM]) -> None:
    _, hf, ours = pair
    ids, mask, positions = padded_batch(LENGTHS, ours.config.vocab_size, left=True, seed=4)
    config = ours.config
    with torch.device("meta"):
        half = get_model_class(config)(config)
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in ours.state_dict().items()}, assign=True)
    hf_half = copy.deepcopy(hf).to(torch.bfloat16)
    with torch.no_grad():
        ref = ours.forward_padded(ids, mask)
        got = half.forward_padded(ids, mask)
        theirs = hf_logits(hf_half, ids, mask, positions)
    assert got.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    keep = mask.bool()
    # bf16 weights and activations, fp32 accumulation, against fp32: the bound of a bf16-stored model.
    inputs = dict(model=ours, outputs=lambda m: m.forward_padded(ids, mask)[keep], implementations=1,
                  storage=torch.bfloat16)
    ours_error = check("model_outputs", got[keep], ref[keep], **inputs)
    # Our bf16 numerics are no worse than transformers' own bf16 run of the same weights.
    hf_error = check("model_outputs", theirs[keep], ref[keep], **inputs)
    assert ours_error <= 2 * hf_error + 0.05


def test_meta_construction_then_assign_gives_identical_logits(
    pair: tuple[str, torch.nn.Module, DecoderForCausalLM],
) -> None:
    case, hf, ours = pair
    config = ours.config
    with torch.device("meta"):
        lazy = get_model_class(config)(config)
    assert all(p.is_meta for p in lazy.parameters())
    state = hf.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")  # tied checkpoints usually omit it; the load must still be strict-clean
    lazy.load_state_dict(state, assign=True)
    lazy.tie_weights()
    assert not any(p.is_meta for p in lazy.parameters())
    assert list(lazy.buffers()) == []
    if config.tie_word_embeddings:
        assert lazy.lm_head.weight is lazy.model.embed_tokens.weight
    else:
        assert lazy.lm_head.weight is not lazy.model.embed_tokens.weight
    ids, mask, _ = padded_batch(LENGTHS, config.vocab_size, left=False, seed=5)
    with torch.no_grad():
        assert torch.equal(lazy.forward_padded(ids, mask), ours.forward_padded(ids, mask)), case


def test_tied_head_follows_embedding_updates() -> None:
    hf = make_hf_model("llama_tied")
    config = ModelConfig.from_dict(hf.config.to_dict())
    model = get_model_class(config)(config)
    model.load_state_dict(hf.state_dict(), assign=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        model.model.embed_tokens.weight[3].add_(1.0)
    assert torch.equal(model.lm_head.weight[3], model.model.embed_tokens.weight[3])
    # One Parameter, so an optimizer sees it once.
    assert len(list(model.parameters())) == len(hf.state_dict()) - 1


def test_gradients_reach_every_parameter() -> None:
    hf = make_hf_model("qwen3_head_dim24_bias")
    config = ModelConfig.from_dict(hf.config.to_dict())
    model = get_model_class(config)(config)
    model.load_state_dict(hf.state_dict())
    ids, mask, _ = padded_batch(LENGTHS, config.vocab_size, left=True, seed=6)
    model.forward_padded(ids, mask).float().pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_build_model_initialises_in_dtype() -> None:
    hf = make_hf_model("qwen2")
    config = ModelConfig.from_dict(hf.config.to_dict())
    model = build_model(config, dtype=torch.bfloat16)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # qwen2 case is tied
    layer = model.model.layers[0]
    assert torch.all(layer.input_layernorm.weight == 1)
    assert torch.all(layer.self_attn.q_proj.bias == 0) and layer.self_attn.o_proj.bias is None
    std = layer.mlp.up_proj.weight.float().std().item()
    assert abs(std - config.initializer_range) < 0.2 * config.initializer_range
    ids = torch.randint(0, config.vocab_size, (2, 5))
    with torch.no_grad():
        assert torch.isfinite(model.forward_padded(ids).float()).all()


def test_model_pickles_and_deep_copies() -> None:
    hf = make_hf_model("llama_tied")
    config = ModelConfig.from_dict(hf.config.to_dict())
    model = get_model_class(config)(config)
    model.load_state_dict(hf.state_dict())
    clone = pickle.loads(pickle.dumps(model))
    assert clone.lm_head.weight is clone.model.embed_tokens.weight
    ids = torch.randint(0, config.vocab_size, (1, 6))
    with torch.no_grad():
        assert torch.equal(clone.forward_padded(ids), model.forward_padded(ids))


def test_all_padding_rows_and_bad_inputs() -> None:
    hf = make_hf_model("mistral")
    config = ModelConfig.from_dict(hf.config.to_dict())
    model = get_model_class(config)(config)
    ids = torch.randint(0, config.vocab_size, (3, 4))
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        out = model.forward_padded(ids, mask)
        single = model.forward_padded(ids[2:], mask[2:])
    assert torch.count_nonzero(out[1]) == 0
    check("model_outputs", out[2], single[0], model=model, outputs=lambda m: m.forward_padded(ids[2:], mask[2:])[0])
    with torch.no_grad():
        assert torch.count_nonzero(model.forward_padded(ids, torch.zeros_like(mask))) == 0
    batch = ForwardBatch.for_sequences([4])
    with pytest.raises(ValueError, match="one \\(k_cache, v_cache\\) pair per layer"):
        model(ids[0], batch, kv_caches=[])
    with pytest.raises(ValueError, match="is_prefill=False"):
        model(ids[0], ForwardBatch(batch.positions, batch.cu_seqlens_q, 4, is_prefill=False))
    with pytest.raises(ValueError, match="num_tokens=4"):
        model(ids[0, :3], batch)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model.forward_padded(ids, mask[:, :3])
