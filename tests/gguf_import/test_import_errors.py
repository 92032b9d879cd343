"""Bad inputs give a GGUFImportError (a ValueError) naming the file and the problem, and never leave a half-written
output directory behind."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tao_engine.atomic_dir import atomic_directory
from tao_engine.gguf_import import GGUFImportError, import_gguf
from tao_engine.gguf_import.importer import parse_size
from tests.gguf_import.synthetic import Q


def _import_fails(src: Path, out: Path, match: str, **kw) -> GGUFImportError:
    with pytest.raises(GGUFImportError, match=match) as err:
        import_gguf(src, out, **kw)
    assert isinstance(err.value, ValueError)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp dir left
    return err.value


def test_not_a_gguf_file(tmp_path: Path) -> None:
    src = tmp_path / "model.gguf"
    src.write_text('{"this": "is json"}')
    err = _import_fails(src, tmp_path / "out", "not a GGUF file")
    assert str(src) in str(err)


def test_missing_file(tmp_path: Path) -> None:
    err = _import_fails(tmp_path / "nope.gguf", tmp_path / "out", "no such file")
    assert "nope.gguf" in str(err)


@pytest.mark.parametrize("keep", [3, 24, 300, -100], ids=["magic", "counts", "metadata", "tensor-data"])
def test_truncated_file(tiny_gguf, tmp_path: Path, keep: int) -> None:
    data = tiny_gguf().path.read_bytes()
    src = tmp_path / "cut.gguf"
    src.write_bytes(data[:keep])
    err = _import_fails(src, tmp_path / "out", "truncated|not a GGUF file" if keep < 4 else "truncated")
    assert str(src) in str(err)


def test_unsupported_quant_type_names_file_tensor_and_type(tiny_gguf, tmp_path: Path) -> None:
    model = tiny_gguf(weight_type=Q.IQ2_XXS)
    err = _import_fails(model.path, tmp_path / "out", "IQ2_XXS")
    assert str(model.path) in str(err) and "token_embd.weight" in str(err) and "Q4_K" in str(err)  # lists supported


@pytest.mark.parametrize("key", ["llama.embedding_length", "llama.block_count", "llama.attention.head_count",
                                 "tokenizer.ggml.merges", "general.architecture"])
def test_missing_required_metadata_key(tiny_gguf, tmp_path: Path, key: str) -> None:
    model = tiny_gguf(drop_keys=(key,))
    err = _import_fails(model.path, tmp_path / "out", "missing")
    assert key in str(err) and str(model.path) in str(err)


def test_unknown_architecture(tiny_gguf, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GGUFWriter logs the overwritten general.architecture
        model = tiny_gguf(metadata={"general.architecture": "mamba"})
    err = _import_fails(model.path, tmp_path / "out", "unsupported architecture 'mamba'")
    assert "llama" in str(err) and "qwen3" in str(err)


def test_metadata_disagreeing_with_tensor_shapes(tiny_gguf, tmp_path: Path) -> None:
    model = tiny_gguf(metadata={"llama.feed_forward_length": 384})
    err = _import_fails(model.path, tmp_path / "out", "blk.0.ffn_gate.weight' has shape")
    assert "384" in str(err)


def test_missing_tensors(tiny_gguf, tmp_path: Path) -> None:
    model = tiny_gguf(metadata={"llama.block_count": 3})  # the file only holds layers 0 and 1
    err = _import_fails(model.path, tmp_path / "out", "missing tensors")
    assert "model.layers.2.mlp.up_proj.weight" in str(err) and "(9 in all)" in str(err)


def test_unknown_tensor(tiny_gguf, tmp_path: Path) -> None:
    extra = {"blk.0.ffn_gate_exps.weight": (np.ones((2, 32), dtype=np.float32), Q.F32)}
    _import_fails(tiny_gguf(raw_tensors=extra).path, tmp_path / "out", "blk.0.ffn_gate_exps.weight")


def test_sentencepiece_tokenizer_is_refused_clearly(tiny_gguf, tmp_path: Path) -> None:
    model = tiny_gguf(metadata={"tokenizer.ggml.model": "llama"})
    err = _import_fails(model.path, tmp_path / "out", "tokenizer model 'llama'")
    assert "gpt2" in str(err)


def test_bad_options(tiny_gguf, tmp_path: Path) -> None:
    src = tiny_gguf().path
    _import_fails(src, tmp_path / "out", "dtype='float64'", dtype="float64")
    _import_fails(src, tmp_path / "out", "max_shard_size", max_shard_size="lots")
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5MiB") == 3 * 2**19 and parse_size(4096) == 4096


def test_non_empty_out_dir_is_refused_and_kept(tiny_gguf, tmp_path: Path) -> None:
    src = tiny_gguf().path
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(GGUFImportError, match="overwrite=True"):
        import_gguf(src, out)
    assert (out / "keep.txt").read_text() == "mine"
    # A failing import with overwrite=True must not destroy the old contents either.
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(src.read_bytes()[:500])
    with pytest.raises(GGUFImportError, match="truncated"):
        import_gguf(bad, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # A successful one replaces them.
    import_gguf(src, out, overwrite=True)
    assert not (out / "keep.txt").exists() and json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf", "out", "tiny.gguf"]


def test_empty_out_dir_is_used(tiny_gguf, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert (import_gguf(tiny_gguf().path, out) / "model.safetensors").is_file()


def test_failure_while_writing_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(out) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
