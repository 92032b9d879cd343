"""Dequantization of every supported GGUF type, GGUF's reversed shape order, and the llama q/k row un-permutation.

References are independent of the code under test: transformers' own torch dequantizer (integrations/gguf/dequant.py)
for Q4_0/Q4_1/Q8_0 and the K-quants, and plain-math formulas written here for F32/F16/BF16/Q5_0/Q5_1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGUFWriter

from tao_engine.gguf_import import GGUFImportError
from tao_engine.gguf_import.reader import open_gguf
from tao_engine.gguf_import.tensors import SUPPORTED_TYPES, dequantize, unpermute_rows
from tests.gguf_import.synthetic import Q, llama_permute, random_blocks
from tests.tolerances import check

ROWS = 7  # odd row count: no accidental reliance on even shapes


def _write(path: Path, tensors: dict[str, tuple[np.ndarray, Q]]) -> Path:
    writer = GGUFWriter(path, "llama")
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    return blocks[:, offset : offset + 2].copy().view(np.float16).astype(np.float64)  # [nb, 1]


def _q5_reference(blocks: np.ndarray, with_min: bool) -> np.ndarray:
    """Q5_0 / Q5_1 by the ggml formula: 4 low bits in qs, the 5th bit in qh; Q5_0 centers at 16, Q5_1 adds m."""
    d = _f16(blocks, 0)
    start = 4 if with_min else 2
    qh = blocks[:, start : start + 4].copy().view("<u4").astype(np.int64)  # [nb, 1]
    qs = blocks[:, start + 4 :].astype(np.int64)  # [nb, 16]
    j = np.arange(16)
    lo = (qs & 0x0F) | (((qh >> j) & 1) << 4)
    hi = (qs >> 4) | (((qh >> (j + 16)) & 1) << 4)
    q = np.concatenate([lo, hi], axis=1)  # [nb, 32]
    return q * d + _f16(blocks, 2) if with_min else (q - 16) * d


def _reference(data: np.ndarray, qtype: Q) -> np.ndarray:
    """Float64 values of `data` ([rows, row_bytes] or a float array) flattened per row."""
    if qtype in (Q.F32, Q.F16):
        return data.astype(np.float64)
    if qtype == Q.BF16:
        bits = data.view("<u2").astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    block, size = GGML_QUANT_SIZES[qtype]
    blocks = data.reshape(-1, size)
    if qtype in (Q.Q5_0, Q.Q5_1):
        values = _q5_reference(blocks, with_min=qtype == Q.Q5_1)
    else:
        from transformers.integrations.gguf.dequant import dequantize as hf_dequantize

        values = hf_dequantize(torch.from_numpy(blocks.copy()).reshape(-1), int(qtype), torch.float64).numpy()
    return values.reshape(data.shape[0], -1)


def _sample(qtype: Q, rng: np.random.Generator, cols: int) -> np.ndarray:
    values = rng.standard_normal((ROWS, cols)).astype(np.float32)
    if qtype == Q.F32:
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    if qtype == Q.BF16:
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(ROWS, -1)
    return random_blocks(qtype, ROWS, cols, rng)


@pytest.mark.parametrize("qtype", sorted(SUPPORTED_TYPES, key=int), ids=lambda q: Q(q).name)
def test_dequantize_matches_reference(qtype: int, tmp_path: Path) -> None:
    qtype = Q(qtype)
    rng = np.random.default_rng(int(qtype))
    cols = 2 * 256  # two blocks of the largest block size per row
    data = _sample(qtype, rng, cols)
    gf = open_gguf(_write(tmp_path / "t.gguf", {"w": (data, qtype)}))
    info = gf.tensors["w"]
    assert info.shape == (ROWS, cols)
    got = dequantize(gf, info)
    assert got.dtype == np.float32 and got.shape == (ROWS, cols)
    want = _reference(data, qtype)
    assert np.abs(want).max() > 0  # random data, not an all-zero tensor that would match anything
    want64 = torch.from_numpy(np.asarray(want, dtype=np.float64))
    check("dequantize", torch.from_numpy(got), want64, values=want64)


def test_quantize_roundtrip_is_close(tmp_path: Path) -> None:
    """What gguf.quants writes for Q8_0/Q4_0 dequantizes to the input within the format's step size."""
    from gguf import quants

    rng = np.random.default_rng(1)
    w = rng.standard_normal((ROWS, 64)).astype(np.float32)
    files = {f"w{q.name}": (quants.quantize(w, q), q) for q in (Q.Q8_0, Q.Q4_0)}
    gf = open_gguf(_write(tmp_path / "t.gguf", files))
    for name, step in (("wQ8_0", 1 / 127), ("wQ4_0", 1 / 8)):
        got = dequantize(gf, gf.tensors[name])
        amax = np.abs(w.reshape(ROWS, 2, 32)).max(-1, keepdims=True)  # [ROWS, 2, 1] per-block scale
        assert np.all(np.abs(got.reshape(ROWS, 2, 32) - w.reshape(ROWS, 2, 32)) <= amax * step + 1e-6)


def test_gguf_dims_are_reversed_to_torch_order(tmp_path: Path) -> None:
    """GGUF lists dims fastest-first; a numpy [2, 3, 5] array is stored as ne = [5, 3, 2] and must come back whole."""
    w = np.random.default_rng(2).standard_normal((2, 3, 5)).astype(np.float32)
    gf = open_gguf(_write(tmp_path / "t.gguf", {"w3": (w, Q.F32)}))
    info = gf.tensors["w3"]
    assert info.dims == (5, 3, 2) and info.shape == (2, 3, 5)
    got = dequantize(gf, info)
    np.testing.assert_array_equal(got, w)
    got[0, 0, 0] += 1  # the result is a private writable copy, not a view of the read-only file map
    assert dequantize(gf, info)[0, 0, 0] == w[0, 0, 0]


def test_unsupported_type_names_file_tensor_and_type(tmp_path: Path) -> None:
    data = random_blocks(Q.IQ2_XXS, 3, 256, np.random.default_rng(3))
    path = _write(tmp_path / "iq.gguf", {"blk.0.attn_q.weight": (data, Q.IQ2_XXS)})
    gf = open_gguf(path)
    with pytest.raises(GGUFImportError, match="IQ2_XXS") as err:
        dequantize(gf, gf.tensors["blk.0.attn_q.weight"])
    assert str(path) in str(err.value) and "blk.0.attn_q.weight" in str(err.value)


@pytest.mark.parametrize(("n_heads", "head_dim", "trailing"), [(1, 2, ()), (3, 8, (5,)), (9, 64, (7,)), (4, 6, ())])
def test_unpermute_inverts_llama_cpp_permute(n_heads: int, head_dim: int, trailing: tuple[int, ...]) -> None:
    hf = torch.randn(n_heads * head_dim, *trailing, dtype=torch.float64)
    gguf_rows = torch.from_numpy(llama_permute(hf.numpy(), n_heads))
    if head_dim > 2:
        assert not torch.equal(gguf_rows, hf)  # the permutation really moves rows
    assert torch.equal(unpermute_rows(gguf_rows, n_heads), hf)  # a permutation: exact
    # Spot-check the row rule itself: GGUF row 2*j + s of a head holds HF row s*head_dim/2 + j.
    half = head_dim // 2
    for j, s in ((0, 1), (half - 1, 0), (half - 1, 1)):
        assert torch.equal(gguf_rows[2 * j + s], hf[s * half + j])
