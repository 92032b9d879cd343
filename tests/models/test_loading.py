"""Loading and atomic saving of HF-layout directories: round trips, shards, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tao_engine import ForwardBatch
from tao_engine.models.config import ModelConfig
from tao_engine.models.loading import ModelLoadError, load_model
from tao_engine.models.registry import build_model
from tao_engine.models.saving import save_pretrained
from tests.tolerances import check

TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 97,
    "hidden_size": 48,
    "intermediate_size": 80,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def _random_model(overrides: dict | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict({**TINY, **(overrides or {})}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _logits(model: torch.nn.Module, lengths=(5, 9, 1)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (sum(lengths),), generator=g)
    with torch.no_grad():
        return model.compute_logits(model(ids, ForwardBatch.for_sequences(list(lengths))))


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_identical_logits(tmp_path: Path, tied: bool):
    model = _random_model({"tie_word_embeddings": tied})
    out = save_pretrained(model, tmp_path / "m", generation_config={"bos_token_id": 1, "eos_token_id": 2})
    assert (out / "config.json").is_file() and (out / "generation_config.json").is_file()
    saved = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in saved) is (not tied)
    loaded = load_model(out)
    assert torch.equal(_logits(model), _logits(loaded))
    if tied:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert not any(p.is_meta for p in loaded.parameters())


def test_sharded_round_trip_and_dtype(tmp_path: Path):
    model = _random_model()
    out = save_pretrained(model, tmp_path / "m", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    assert torch.equal(_logits(model), _logits(load_model(out)))
    bf16 = load_model(out, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_save_replaces_existing_dir_atomically(tmp_path: Path):
    target = tmp_path / "m"
    save_pretrained(_random_model(seed=0), target)
    second = _random_model(seed=1)
    save_pretrained(second, target)
    assert torch.equal(_logits(second), _logits(load_model(target)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or backup dirs left


def test_save_failure_leaves_previous_model(tmp_path: Path):
    target = tmp_path / "m"
    first = _random_model(seed=0)
    save_pretrained(first, target)

    class BrokenTokenizer:
        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_pretrained(_random_model(seed=1), target, tokenizer=BrokenTokenizer())
    assert torch.equal(_logits(first), _logits(load_model(target)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_transformers_loads_our_save(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    model = _random_model()
    out = save_pretrained(model, tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    ids = torch.randint(0, TINY["vocab_size"], (1, 11))
    with torch.no_grad():
        ours = model.forward_padded(ids)
        theirs = hf(ids).logits
    check("model_outputs", ours, theirs, model=model, outputs=lambda m: m.forward_padded(ids))


# ---- bad input: each error names the file and the problem ----


def test_missing_dir_and_config(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path)


def test_missing_weights(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(ModelLoadError, match="no weights found"):
        load_model(tmp_path)


def test_unknown_architecture(tmp_path: Path):
    out = save_pretrained(_random_model(), tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"config\.json.*GPTNeoXForCausalLM"):
        load_model(out)


def test_shape_mismatch_names_tensor_and_file(tmp_path: Path):
    out = save_pretrained(_random_model(), tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*mlp\.\w+_proj\.weight.*shape"):
        load_model(out)


def test_missing_and_unexpected_tensors(tmp_path: Path):
    out = save_pretrained(_random_model(), tmp_path / "m")
    weights = load_file(str(out / "model.safetensors"))
    dropped = dict(weights)
    dropped.pop("model.norm.weight")
    save_file(dropped, str(out / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing.*model.norm.weight"):
        load_model(out)
    extra = dict(weights, **{"model.layers.9.mlp.up_proj.weight": torch.zeros(2, 2)})
    save_file(extra, str(out / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="unexpected tensor 'model.layers.9.mlp.up_proj.weight'"):
        load_model(out)


def test_corrupt_safetensors_header(tmp_path: Path):
    out = save_pretrained(_random_model(), tmp_path / "m")
    path = out / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"{not json at all, broken header "
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: corrupt"):
        load_model(out)
    path.write_bytes(b"\x05")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: corrupt"):
        load_model(out)


def test_index_pointing_to_missing_shard(tmp_path: Path):
    out = save_pretrained(_random_model(), tmp_path / "m", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (out / first).unlink()
    with pytest.raises(ModelLoadError, match=f"{first}: missing"):
        load_model(out)
