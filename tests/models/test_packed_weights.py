"""The engine's packed copy of the linear weights (tao_engine/layers/packed_linear.py, models/packed_weights.py):
each joined, prepacked GEMM against fp64; the paged decode path through it against the modules' cache-free forward;
the copy kept in step with in-place writes, storage swaps and replaced tensors; refusals that say why."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.forward_batch import ForwardBatch
from tao_engine.layers.packed_linear import PackedLinear
from tao_engine.models.packed_weights import PackedDecoderWeights, choose_packing
from tests import helpers
from tests.models.test_kv_path import Pager, assert_logits, fresh, random_tokens, run_step
from tests.tolerances import check

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")

BF16_OK = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
DTYPES = [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not BF16_OK, reason="oneDNN has no bf16 on this CPU (needs AVX-512 BW or newer)"))]

CONFIGS = {
    "llama_gqa": dict(architectures=["LlamaForCausalLM"], model_type="llama"),
    # biases on q/k/v, o and the MLP: the joined biases must line up with the joined rows
    "llama_biases": dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=True, mlp_bias=True),
    "qwen3_qk_norm": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=16, qk_norm=True),
}


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    return helpers.tiny_model(seed, **CONFIGS[name], vocab_size=97, max_position_embeddings=256)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 70])
def test_joined_packed_linear_matches_fp64(rows, bias, dtype):
    gen = torch.Generator().manual_seed(rows)
    outs, k = (37, 11, 13), 29  # odd sizes: the joined rows and their biases must line up
    weights = [torch.randn(o, k, generator=gen).to(dtype) for o in outs]
    biases = [torch.randn(o, generator=gen).to(dtype) if bias else None for o in outs]
    x = torch.randn(rows, k, generator=gen).to(dtype)
    y = PackedLinear(weights, biases, batch_hint=64)(x)
    weight = torch.cat(weights)
    joined_bias = torch.cat(biases) if bias else None
    expected = x.double() @ weight.double().T + (0 if joined_bias is None else joined_bias.double())
    assert y.shape == (rows, sum(outs)) and y.dtype == dtype
    check("linear", y, expected, x=x, weight=weight, bias=joined_bias)
    assert PackedLinear(weights, biases, batch_hint=64)(x[None]).shape == (1, rows, sum(outs))  # leading dims kept


def test_joining_linears_with_and_without_bias_is_refused():
    with pytest.raises(ValueError, match="all have a bias or none"):
        PackedLinear([torch.randn(3, 4), torch.randn(2, 4)], [torch.randn(3), None], batch_hint=8)


def _logits(model, packed, tokens, spans, caches, pager, prefill):
    return run_step(model, caches, pager, tokens, spans, prefill, packed=packed)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_decode_matches_full_forward(name):
    _packed_decode_matches_full_forward(name)  # decode_layer's cpp backend where the extension is built


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_decode_reference_matches_full_forward(name):
    with ops.use_backend("torch"):  # decode_layer's reference, every op inside it on its own reference
        _packed_decode_matches_full_forward(name)


def _packed_decode_matches_full_forward(name):
    model, pager = tiny_model(name), Pager(seed=1)
    packed = PackedDecoderWeights(model, batch_hint=4)
    caches = fresh(model)
    tokens = {0: random_tokens(5, 10), 1: random_tokens(11, 11), 2: random_tokens(1, 12)}
    spans = [(seq, 0, len(ids)) for seq, ids in tokens.items()]
    got = {seq: [out] for seq, out in _logits(model, packed, tokens, spans, caches, pager, True).items()}
    for _ in range(4):
        for seq in tokens:
            tokens[seq].append(int(got[seq][-1][-1].argmax()))
        spans = [(seq, len(ids) - 1, len(ids)) for seq, ids in tokens.items()]
        for seq, out in _logits(model, packed, tokens, spans, caches, pager, False).items():
            got[seq].append(out)
    for seq, ids in tokens.items():
        assert_logits(model, torch.cat(got[seq])[: len(ids) - 1], ids, slice(None, -1))


def _last_logits(model, packed, ids):
    """Prefill ids[:-1], then decode ids[-1] through the packed layers: the last token's logits [1, V]."""
    caches, pager, tokens = fresh(model), Pager(seed=2), {0: ids}
    _logits(model, packed, tokens, [(0, 0, len(ids) - 1)], caches, pager, True)
    return _logits(model, packed, tokens, [(0, len(ids) - 1, len(ids))], caches, pager, False)[0]


def test_an_update_in_place_is_packed_again_and_only_it():
    model = tiny_model("llama_gqa")
    packed = PackedDecoderWeights(model, batch_hint=4)
    ids = random_tokens(9, 3)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.mul_(1.5)  # an optimizer step writes in place
    assert packed.refresh() == 1  # layer 1's gate|up matrix, nothing else
    assert_logits(model, _last_logits(model, packed, ids), ids, slice(-1, None))
    assert packed.refresh() == 0


def test_a_storage_swap_is_packed_again():
    model = tiny_model("llama_gqa")
    packed = PackedDecoderWeights(model, batch_hint=4)
    ids = random_tokens(9, 4)
    weight = model.model.layers[0].self_attn.k_proj.weight
    weight.data = weight.data * 2  # `p.data = ...`: same Parameter, new storage, no version bump
    assert packed.refresh() == 1
    assert_logits(model, _last_logits(model, packed, ids), ids, slice(-1, None))


def test_a_replaced_tensor_is_seen_by_sync():
    model = tiny_model("llama_gqa")
    packed = PackedDecoderWeights(model, batch_hint=4)
    ids = random_tokens(9, 5)
    state = {k: v * 1.25 for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)  # new Parameter objects: nothing written in place
    stale = _last_logits(model, packed, ids)
    assert not torch.allclose(stale, _last_logits(model, None, ids))  # refresh alone cannot see it ...
    assert packed.sync() == 4 * len(model.model.layers) + 1  # ... sync re-reads every module
    assert_logits(model, _last_logits(model, packed, ids), ids, slice(-1, None))


def test_packed_forward_refuses_to_build_a_graph():
    model = tiny_model("llama_gqa")
    packed = PackedDecoderWeights(model, batch_hint=4)
    caches, pager, tokens = fresh(model), Pager(1), {0: [1, 2, 3, 4]}
    run_step(model, caches, pager, tokens, [(0, 0, 3)], True)
    with pytest.raises(ValueError, match="linears .* is for inference"):
        run_step(model, caches, pager, tokens, [(0, 3, 4)], False, packed=packed, grad=True)


def test_packed_layers_refuse_a_prefill():
    model = tiny_model("llama_gqa")
    packed = PackedDecoderWeights(model, batch_hint=4)
    batch = ForwardBatch.for_sequences([3])
    with torch.no_grad(), pytest.raises(ValueError, match="decode steps over the KV cache only"):
        model(torch.tensor([1, 2, 3]), batch, linears=packed.layers)


def test_choice_says_why():
    fp32 = tiny_model("llama_gqa")
    auto = choose_packing(None, fp32, compile_decode=False)
    assert auto.enabled and "float32 CPU weights" in auto.reason
    assert choose_packing(True, fp32, compile_decode=False).enabled
    half = tiny_model("llama_gqa").to(torch.float16)
    off = choose_packing(None, half, compile_decode=False)
    assert not off.enabled and "float16" in off.reason
    with pytest.raises(ValueError, match="pack_linears=True: torch.float16 weights"):
        choose_packing(True, half, compile_decode=False)
    assert not choose_packing(False, fp32, compile_decode=False).enabled
    with pytest.raises(ValueError, match="compile_decode"):
        choose_packing(True, fp32, compile_decode=True)
    if BF16_OK:
        bf16 = tiny_model("llama_gqa").to(torch.bfloat16)
        assert choose_packing(None, bf16, compile_decode=False).enabled
        assert not choose_packing(None, bf16, compile_decode=True).enabled


def test_auto_leaves_a_copy_that_would_crowd_memory_out():
    from tao_engine.models.packed_weights import linear_weight_bytes

    model = tiny_model("llama_gqa")
    need = linear_weight_bytes(model)
    assert need == sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert choose_packing(None, model, compile_decode=False, available_bytes=2 * need).enabled
    crowded = choose_packing(None, model, compile_decode=False, available_bytes=2 * need - 1)
    assert not crowded.enabled and "more than 50% of the memory available" in crowded.reason
    assert choose_packing(True, model, compile_decode=False, available_bytes=need).enabled  # asked for: packs


def test_doctor_says_what_auto_does_here():
    from tao_engine.doctor import report
    from tao_engine.models.packed_weights import auto_packing
    from tao_engine.precision import choose_dtype

    packing = auto_packing(choose_dtype("cpu").dtype)
    assert packing.enabled == (choose_dtype("cpu").dtype == torch.float32 or BF16_OK)
    verdict = "packed" if packing.enabled else "not packed"
    assert f"linears cpu: {verdict} by the engine at the auto dtype ({packing.reason})" in report()


def test_an_adapter_layer_is_refused_by_name():
    from tao_engine.rl.lora import LoraConfig, apply_lora

    model = tiny_model("llama_gqa")
    apply_lora(model, LoraConfig(r=2, target_modules=("q_proj",)))
    assert not choose_packing(None, model, compile_decode=False).enabled
    with pytest.raises(ValueError, match=r"pack_linears=True: model\.layers\.0\.self_attn\.q_proj is a LoraLinear"):
        choose_packing(True, model, compile_decode=False)
