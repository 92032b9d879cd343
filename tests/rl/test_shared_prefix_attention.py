"""shared_prefix_attention against a dense-mask fp64 SDPA over the whole packed batch (values and gradients), the
ForwardBatch layout that describes it, and a whole model forward on it against each prompt + completion alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tao_engine import ForwardBatch, ops
from tests import helpers
from tests.tolerances import check

# (prompt length, completion lengths) per group: n = 1, 3, 4, odd lengths, prompts of different lengths. The op lays
# the completions out by completion while that gathers at most twice the rows of the group layout: the last layout
# (a long prompt over short completions) takes the group layout, the others the per-completion one.
LAYOUTS = [
    [(1, [1])],
    [(7, [3, 1, 5])],
    [(5, [2]), (13, [7, 1, 4, 9]), (2, [11, 3, 3])],
    [(33, [5, 17, 1, 8]), (9, [40])],
    [(40, [3, 2, 5, 1]), (2, [4, 6])],
]
HEADS = [(4, 4), (4, 2), (6, 1)]  # (Hq, Hkv): MHA, GQA, MQA


def _dense_mask(cu: list[int], owners: list[int]) -> torch.Tensor:
    """[N, N] bool, written token by token as the definition reads: a key is visible when it is in the query's own
    sequence and not after it, or anywhere in the prompt that the query's (completion) sequence shares."""
    n = cu[-1]
    seq = [s for s in range(len(owners)) for _ in range(cu[s], cu[s + 1])]
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            own = seq[j] == seq[i] and j <= i
            shared = owners[seq[i]] != seq[i] and seq[j] == owners[seq[i]]
            mask[i, j] = own or shared
    return mask


def _reference64(q, k, v, cu, owners, scale):
    mask = _dense_mask(cu, owners)
    rep = q.shape[1] // k.shape[1]
    qd, kd, vd = (x.double().transpose(0, 1) for x in (q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)))
    out = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, scale=scale)  # [H, N, D]
    return out.transpose(0, 1)


def _inputs(total: int, hq: int, hkv: int, d: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(total, h, d, generator=gen).to(dtype) for h in (hq, hkv, hkv))
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("hq", "hkv"), HEADS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_matches_dense_mask_reference(layout, hq, hkv, dtype):
    batch = ForwardBatch.for_shared_prompts([p for p, _ in layout], [c for _, c in layout])
    q, k, v = _inputs(batch.num_tokens, hq, hkv, 16, dtype, seed=batch.num_tokens * 7 + hq + hkv)
    scale = 16**-0.5
    out = ops.shared_prefix_attention(q, k, v, batch.cu_seqlens_q, batch.prompt_seq, batch.max_seqlen_q, scale)
    ref = _reference64(q, k, v, batch.cu_seqlens_q.tolist(), batch.prompt_seq.tolist(), scale)
    assert out.shape == q.shape and out.dtype == dtype
    visible = _dense_mask(batch.cu_seqlens_q.tolist(), batch.prompt_seq.tolist())
    # A half dtype attends through SDPA in that dtype: fp32 accumulation, the weights rounded for the P x V product.
    check("attention", out, ref, q=q, k=k, v=v, visible=visible, scale=scale, output=dtype,
          half=None if dtype == torch.float32 else dtype)


@pytest.mark.parametrize(("hq", "hkv"), HEADS)
@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_gradients_match_dense_mask_reference(layout, hq, hkv):
    batch = ForwardBatch.for_shared_prompts([p for p, _ in layout], [c for _, c in layout])
    q, k, v = _inputs(batch.num_tokens, hq, hkv, 8, torch.float32, seed=batch.num_tokens + 31 * hq)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(5))
    scale = 0.3
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = ops.shared_prefix_attention(*leaves, batch.cu_seqlens_q, batch.prompt_seq, batch.max_seqlen_q, scale)
    grads = torch.autograd.grad(out, leaves, grad_out)
    leaves64 = [x.double().requires_grad_() for x in (q, k, v)]
    ref = _reference64(*leaves64, batch.cu_seqlens_q.tolist(), batch.prompt_seq.tolist(), scale)
    grads64 = torch.autograd.grad(ref, leaves64, grad_out.double())
    visible = _dense_mask(batch.cu_seqlens_q.tolist(), batch.prompt_seq.tolist())
    for name, g, g64 in zip("qkv", grads, grads64, strict=True):
        assert g.abs().max() > 0, f"d{name} is all zero"
        check(f"attention_grad_{name}", g, g64, q=q, k=k, v=v, visible=visible, scale=scale, grad_out=grad_out)


def test_prompt_only_groups_and_empty_completions_mix_with_shared_groups():
    # Sequence lengths 4 | 3, 0, 2 | 5 | 1, 0 with prompts at 0, 1 (completions 2, 3), 4, 5 (completion 6).
    cu = torch.tensor([0, 4, 7, 7, 9, 14, 15, 15], dtype=torch.int32)
    owners = torch.tensor([0, 1, 1, 1, 4, 5, 5], dtype=torch.int32)
    q, k, v = _inputs(15, 4, 2, 8, torch.float32, seed=3)
    out = ops.shared_prefix_attention(q, k, v, cu, owners, 5, 0.5)
    check("attention", out, _reference64(q, k, v, cu.tolist(), owners.tolist(), 0.5), q=q, k=k, v=v,
          visible=_dense_mask(cu.tolist(), owners.tolist()), scale=0.5, output=torch.float32)


def test_no_completions_equals_varlen_causal_attention():
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    q, k, v = _inputs(10, 2, 2, 8, torch.float32, seed=4)
    owners = [0, 1]
    out = ops.shared_prefix_attention(q, k, v, cu, torch.tensor(owners, dtype=torch.int32), 7, 0.5)
    expected = _reference64(q, k, v, cu.tolist(), owners, 0.5)
    inputs = dict(q=q, k=k, v=v, visible=_dense_mask(cu.tolist(), owners), scale=0.5, output=torch.float32)
    check("attention", out, expected, **inputs)  # both ops within the bound of the same fp64 attention
    check("attention", ops.varlen_causal_attention(q, k, v, cu, 7, 0.5), expected, **inputs)


def test_bad_layouts_are_rejected_with_the_sequence_named():
    q, k, v = _inputs(6, 2, 2, 8, torch.float32, seed=0)
    cu = torch.tensor([0, 2, 4, 6], dtype=torch.int32)
    with pytest.raises(ValueError, match="sequence 2 names prompt sequence 0"):
        ops.shared_prefix_attention(q, k, v, cu, torch.tensor([0, 1, 0], dtype=torch.int32), 2, 1.0)
    with pytest.raises(ValueError, match="sequence 0 names prompt sequence 1"):
        ops.shared_prefix_attention(q, k, v, cu, torch.tensor([1, 1, 1], dtype=torch.int32), 2, 1.0)
    empty_prompt = torch.tensor([0, 0, 4, 6], dtype=torch.int32)
    with pytest.raises(ValueError, match="prompt sequence 0 is empty"):
        ops.shared_prefix_attention(q, k, v, empty_prompt, torch.tensor([0, 0, 0], dtype=torch.int32), 4, 1.0)
    with pytest.raises(ValueError, match="3 entries for 2 sequences"):
        ops.shared_prefix_attention(q, k, v, cu[:3], torch.tensor([0, 0, 0], dtype=torch.int32), 2, 1.0)


def test_for_shared_prompts_layout():
    batch = ForwardBatch.for_shared_prompts([3, 2], [[2, 1], [4]])
    assert batch.cu_seqlens_q.tolist() == [0, 3, 5, 6, 8, 12]
    assert batch.prompt_seq.tolist() == [0, 0, 0, 3, 3]
    assert batch.positions.tolist() == [0, 1, 2, 3, 4, 3, 0, 1, 2, 3, 4, 5]
    assert batch.max_seqlen_q == 4 and batch.num_seqs == 5 and batch.has_shared_prompts
    assert not ForwardBatch.for_sequences([3]).has_shared_prompts


@pytest.mark.parametrize(
    ("prompts", "completions", "match"),
    [([3], [[]], "group 0 needs"), ([0], [[1]], "group 0 needs"), ([3, 2], [[1], [0]], "group 1 needs"),
     ([3], [[1], [2]], "one list of completion lengths per prompt")],
)
def test_for_shared_prompts_rejects_bad_lengths(prompts, completions, match):
    with pytest.raises(ValueError, match=match):
        ForwardBatch.for_shared_prompts(prompts, completions)


def test_forward_batch_rejects_prompt_seq_with_a_cache_or_of_the_wrong_size():
    good = ForwardBatch.for_shared_prompts([2], [[1, 1]])
    with pytest.raises(ValueError, match="one entry per sequence"):
        ForwardBatch(good.positions, good.cu_seqlens_q, 2, prompt_seq=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="cache-free"):
        ForwardBatch(good.positions, good.cu_seqlens_q, 2, slot_mapping=torch.arange(4), prompt_seq=good.prompt_seq)


def test_model_forward_on_shared_layout_equals_each_sequence_alone():
    model = helpers.tiny_model(seed=1).double()
    gen = torch.Generator().manual_seed(0)
    layout = [(9, [3, 1, 6]), (4, [5])]
    ids, expected = [], []
    for p, comps in layout:
        prompt = torch.randint(0, 101, (p,), generator=gen)
        seqs = [torch.randint(0, 101, (c,), generator=gen) for c in comps]
        ids += [prompt, *seqs]
        with torch.no_grad():
            for i, comp in enumerate(seqs):
                full = torch.cat([prompt, comp])
                hidden = model(full, ForwardBatch.for_sequences([full.numel()]))
                if i == 0:
                    expected.append(hidden[:p])
                expected.append(hidden[p:])
    batch = ForwardBatch.for_shared_prompts([p for p, _ in layout], [c for _, c in layout])
    with torch.no_grad():
        hidden = model(torch.cat(ids), batch)
    check("fp64_recomputation", hidden, torch.cat(expected))
