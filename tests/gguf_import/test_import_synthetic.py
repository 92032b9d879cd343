"""Tiny synthetic GGUF checkpoints of every supported architecture imported and checked against the random HF
checkpoint they were written from: tensors, config, logits of transformers' model, rope scaling, shards, dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tao_engine.gguf_import import import_gguf
from tests.gguf_import.synthetic import Q, TinyModel
from tests.tolerances import check

transformers = pytest.importorskip("transformers")

IDS = torch.tensor([[3, 70, 260, 15, 199, 261, 42, 7, 100, 255, 33, 12]])  # [1, 12]


def _ground_truth(model: TinyModel) -> torch.nn.Module:
    """transformers' model for the checkpoint the GGUF was written from."""
    ref = transformers.AutoModelForCausalLM.from_config(model.hf_config)
    result = ref.load_state_dict(model.expected, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"lm_head.weight"}  # tied: shared with the embedding
    return ref.eval()


def _load_ours(out: Path) -> torch.nn.Module:
    ours, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return ours.eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _assert_logits(got: torch.Tensor, want: torch.Tensor, out: Path) -> None:
    """Two fp32 computations of the imported checkpoint's logits (transformers on our directory and on the ground
    truth, whose weights agree within dequantization): within the whole-model bound of our decoder on it."""
    from tao_engine.models.loading import load_model

    check("model_outputs", got, want, model=load_model(out), outputs=lambda m: m.forward_padded(IDS))


@pytest.mark.parametrize(("arch", "tied"), [("llama", True), ("llama", False), ("qwen2", False), ("qwen3", True)])
def test_matches_ground_truth_checkpoint(tiny_gguf, tmp_path: Path, arch: str, tied: bool) -> None:
    model = tiny_gguf(arch=arch, tied=tied)
    out = import_gguf(model.path, tmp_path / "out")
    got = load_file(out / "model.safetensors")
    assert set(got) == set(model.expected)
    assert ("lm_head.weight" in got) is not tied
    for name, tensor in got.items():
        assert tensor.dtype == model.expected[name].dtype and torch.equal(tensor, model.expected[name]), name  # F32

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                     "qwen3": "Qwen3ForCausalLM"}[arch]]
    assert cfg["tie_word_embeddings"] is tied and cfg["head_dim"] == model.hf_config.head_dim
    assert cfg["num_key_value_heads"] == 2 and cfg["rms_norm_eps"] == 1e-5 and cfg["rope_theta"] == 10000.0

    want = _logits(_ground_truth(model))
    assert want.abs().max() > 0.1
    _assert_logits(_logits(_load_ours(out)), want, out)


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K,
                                   Q.Q5_K, Q.Q6_K], ids=lambda q: q.name)
def test_quantized_llama_matches_dequantized_checkpoint(tiny_gguf, tmp_path: Path, qtype: Q) -> None:
    """q/k rows of a quantized llama are un-permuted whole (quantization is per row, so it commutes)."""
    model = tiny_gguf(weight_type=qtype)
    got = load_file(import_gguf(model.path, tmp_path / "out") / "model.safetensors")
    for name, tensor in got.items():
        check("dequantize", tensor, model.expected[name], values=model.expected[name])


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_quantized_llama_matches_transformers_gguf_loader(tiny_gguf, tmp_path: Path, qtype: Q) -> None:
    """An independent dequantizer and un-permutation: transformers' GGUF loading of the same file."""
    model = tiny_gguf(weight_type=qtype, tied=False)
    got = load_file(import_gguf(model.path, tmp_path / "out") / "model.safetensors")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=model.path.name, dtype=torch.float32)
    want = ref.state_dict()
    assert set(got) == set(want)
    for name, tensor in got.items():
        check("dequantize", tensor, want[name], values=want[name])


@pytest.mark.parametrize("low", [1.0, 2.0])
def test_llama3_rope_scaling_is_rebuilt_from_rope_freqs(tiny_gguf, tmp_path: Path, low: float) -> None:
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": low, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256}
    model = tiny_gguf(rope_scaling=scaling)
    out = import_gguf(model.path, tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    if low == 1.0:
        assert cfg["rope_scaling"] == scaling  # the usual Llama 3.x values come back verbatim
    else:
        # Only ratios are recoverable; the rebuilt scaling is an equivalent one with low_freq_factor 1.
        assert cfg["rope_scaling"]["rope_type"] == "llama3" and cfg["rope_scaling"]["low_freq_factor"] == 1.0
    ours, ref = _load_ours(out), _ground_truth(model)
    check("rotary_inv_freq", ours.model.rotary_emb.inv_freq, ref.model.rotary_emb.inv_freq)
    _assert_logits(_logits(ours), _logits(ref), out)


@pytest.mark.parametrize(("extra", "want"), [
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}, {"rope_type": "linear", "factor": 4.0}),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0,
      "llama.rope.scaling.original_context_length": 128},
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}),
])
def test_rope_scaling_from_metadata(tiny_gguf, tmp_path: Path, extra: dict, want: dict) -> None:
    out = import_gguf(tiny_gguf(metadata=extra).path, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == want
    ours = _load_ours(out)
    assert ours.config.rope_parameters["rope_type"] == want["rope_type"]  # transformers accepts it as written


def test_unsupported_rope_scaling_type(tiny_gguf, tmp_path: Path) -> None:
    from tao_engine.gguf_import import GGUFImportError

    with pytest.raises(GGUFImportError, match="rope scaling type 'longrope'"):
        import_gguf(tiny_gguf(metadata={"llama.rope.scaling.type": "longrope"}).path, tmp_path / "out")


def test_no_rope_freqs_means_no_rope_scaling(tiny_gguf, tmp_path: Path) -> None:
    out = import_gguf(tiny_gguf().path, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["rope_scaling"] is None


def test_sharded_output(tiny_gguf, tmp_path: Path) -> None:
    model = tiny_gguf(tied=False)
    single = load_file(import_gguf(model.path, tmp_path / "one") / "model.safetensors")
    out = import_gguf(model.path, tmp_path / "many", max_shard_size="600KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == set(shards) and set(index["weight_map"]) == set(single)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in single.values())
    for shard in shards:
        tensors = load_file(out / shard)
        assert sum(t.numel() * 4 for t in tensors.values()) <= 600_000 or len(tensors) == 1
        for name, tensor in tensors.items():
            assert index["weight_map"][name] == shard
            assert tensor.dtype == single[name].dtype and torch.equal(tensor, single[name]), name
    _assert_logits(_logits(_load_ours(out)), _logits(_ground_truth(model)), out)


@pytest.mark.parametrize(("name", "dtype"), [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_output_dtype(tiny_gguf, tmp_path: Path, name: str, dtype: torch.dtype) -> None:
    model = tiny_gguf(weight_type=Q.Q8_0)
    out = import_gguf(model.path, tmp_path / "out", dtype=name)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == name
    for key, tensor in load_file(out / "model.safetensors").items():
        assert tensor.dtype == dtype, key
        assert torch.equal(tensor, model.expected[key].to(dtype)), key  # the dtype is asserted above
