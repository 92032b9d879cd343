"""decode_layer (tao_engine/ops/decode_layer.py): the cpp backend runs the reference's kernels in the reference's
order, so it must equal the reference bit for bit (output, residual stream and both caches), for odd shapes, with and
without biases, head norms and an incoming residual; refusals that name the reason. That the reference is the layer
(against the modules' cache-free forward, within the whole-model bound) is tests/models/test_packed_weights.py."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tests.ops.conftest import backends

ONEDNN = torch.backends.mkldnn.is_available()
BF16_OK = ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()
DTYPES = [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not BF16_OK, reason="oneDNN has no bf16 on this CPU (needs AVX-512 BW or newer)"))]
pytestmark = pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN (packed weights)")

BLOCK = 4


def _case(n, hidden, heads, kv_heads, head_dim, inter, dtype, bias, qk_norm, residual, seed):
    """A decode step's inputs: n sequences with contexts of 1..9 tokens in shuffled blocks (the new token's slot
    included), weights prepacked as the engine packs them, unit-order activations."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    lens = torch.randint(1, 10, (n,), generator=gen)
    blocks_per = (lens + BLOCK - 1) // BLOCK
    order = torch.randperm(int(blocks_per.sum()) + 3, generator=gen)
    tables = torch.zeros(n, int(blocks_per.max()), dtype=torch.int32)
    used = 0
    for i, b in enumerate(blocks_per.tolist()):
        tables[i, :b] = order[used:used + b]
        used += b
    slots = torch.tensor([int(tables[i, (p - 1) // BLOCK]) * BLOCK + (p - 1) % BLOCK for i, p in
                          enumerate(lens.tolist())])
    num_blocks = int(order.max()) + 1
    positions = (lens - 1).to(torch.float32)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    emb = torch.cat([positions[:, None] * inv_freq] * 2, -1)  # [N, D]
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    plain = [rand(q_out + 2 * kv_out, hidden, scale=hidden ** -0.5), rand(hidden, q_out, scale=q_out ** -0.5),
             rand(2 * inter, hidden, scale=hidden ** -0.5), rand(hidden, inter, scale=inter ** -0.5)]
    biases = [rand(w.shape[0], scale=0.1) if bias else None for w in plain]
    norms = [1 + rand(hidden, scale=0.2), 1 + rand(hidden, scale=0.2)]
    if qk_norm:
        norms += [1 + rand(head_dim, scale=0.2), 1 + rand(head_dim, scale=0.2)]
    caches = [rand(num_blocks, BLOCK, kv_heads, head_dim) for _ in range(2)]
    return dict(hidden=rand(n, hidden), residual=rand(n, hidden) if residual else None, cos=emb.cos(), sin=emb.sin(),
                slot_mapping=slots, block_tables=tables, context_lens=lens.to(torch.int32), k_cache=caches[0],
                v_cache=caches[1], norms=norms, plain=plain, biases=biases, num_heads=heads, num_kv_heads=kv_heads,
                eps=1e-5, scale=head_dim ** -0.5)


def _run(case, backend=None, packed=True):
    args = dict(case)
    plain = args.pop("plain")
    args["weights"] = [torch.ops.mkldnn._reorder_linear_weight(w, 8) for w in plain] if packed else plain
    args["k_cache"], args["v_cache"] = case["k_cache"].clone(), case["v_cache"].clone()
    out, residual = ops.decode_layer(**args, backend=backend)
    return out, residual, args["k_cache"], args["v_cache"]


SHAPES = [  # n, hidden, heads, kv_heads, head_dim, intermediate
    (1, 24, 2, 1, 12, 19),
    (5, 48, 3, 1, 16, 37),
    (33, 40, 4, 2, 10, 61),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias,qk_norm,residual", [(False, False, True), (True, True, True), (False, True, False)])
@pytest.mark.parametrize("backend", backends("cpp"))
def test_cpp_equals_the_reference_bit_for_bit(backend, shape, bias, qk_norm, residual, dtype):
    case = _case(*shape, dtype, bias, qk_norm, residual, seed=sum(shape))
    got = _run(case, backend=backend)
    expected = _run(case, backend="torch")
    for name, a, b in zip(("output", "residual", "k_cache", "v_cache"), got, expected, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("backend", backends("cpp"))
def test_cpp_refuses_mixed_dtypes_by_name(backend):
    case = _case(*SHAPES[0], torch.float32, False, False, True, seed=1)
    case["residual"] = case["residual"].double()
    with pytest.raises(ops.BackendUnavailableError, match="residual must have hidden's dtype"):
        _run(case, backend=backend)


def test_wrong_weight_count_is_refused():
    case = _case(*SHAPES[0], torch.float32, False, False, True, seed=2)
    case["plain"] = case["plain"][:3]
    with pytest.raises(ValueError, match="weights/biases 4 entries each"):
        _run(case, backend="torch", packed=False)
