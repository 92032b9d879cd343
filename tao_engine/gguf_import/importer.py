"""`import_gguf`: a GGUF file -> a Hugging Face model directory, written atomically."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from tao_engine.atomic_dir import atomic_directory
from tao_engine.gguf_import.config import build_config, build_generation_config
from tao_engine.gguf_import.reader import GGUFFile, GGUFImportError, open_gguf
from tao_engine.gguf_import.tensors import TensorPlan, load_tensor, plan_tensors
from tao_engine.gguf_import.tokenizer import build_tokenizer_files

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def import_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert the GGUF file `gguf_path` into an HF model directory `out_dir` and return its path.

    Writes config.json, generation_config.json, model.safetensors (or shards plus model.safetensors.index.json when
    larger than `max_shard_size`, an int in bytes or a string like "500MB"), tokenizer.json, tokenizer_config.json
    and special_tokens_map.json. Quantized tensors are dequantized and stored as `dtype`. The directory is built
    next to `out_dir` and renamed into place, so a failure leaves `out_dir` untouched; an existing non-empty
    `out_dir` is refused unless `overwrite=True`. `progress=True` shows a tqdm bar over the tensors. Raises
    GGUFImportError (a ValueError) naming the file and the problem.
    """
    if dtype not in DTYPES:
        raise GGUFImportError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}.")
    shard_limit = parse_size(max_shard_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GGUFImportError(f"{out_dir}: exists and is not a directory; choose another out_dir.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise GGUFImportError(f"{out_dir}: directory is not empty; pass overwrite=True to replace it.")

    # Validate everything (metadata, tensor names/types/shapes, tokenizer) before writing a byte.
    gf = open_gguf(gguf_path)
    config = build_config(gf, dtype)
    generation_config = build_generation_config(gf, config)
    plans = plan_tensors(gf, config)
    tokenizer_files = build_tokenizer_files(gf, config["max_position_embeddings"])

    with atomic_directory(out_dir) as tmp:
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", generation_config)
        for name, text in tokenizer_files.items():
            (tmp / name).write_text(text + "\n", encoding="utf-8")
        _write_weights(gf, plans, tmp, DTYPES[dtype], shard_limit, progress)
    return out_dir


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "2GB", "500MB", "1GiB" (decimal units as in HF's save_pretrained)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", str(size).upper())
        if not m:
            raise GGUFImportError(f"max_shard_size={size!r} is not a size; use bytes or a string like '2GB'.")
        value = int(float(m.group(1)) * _UNITS[m.group(2) or ""])
    if value <= 0:
        raise GGUFImportError(f"max_shard_size={size!r} must be positive.")
    return value


def _shards(plans: list[TensorPlan], itemsize: int, limit: int) -> list[list[TensorPlan]]:
    """Greedy split in checkpoint order; a tensor larger than `limit` gets a shard of its own."""
    shards: list[list[TensorPlan]] = [[]]
    size = 0
    for p in plans:
        nbytes = p.numel * itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(p)
        size += nbytes
    return shards


def _write_weights(gf: GGUFFile, plans: list[TensorPlan], out: Path, dtype: torch.dtype, limit: int,
                   progress: bool) -> None:
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards = _shards(plans, itemsize, limit)
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    with tqdm(total=len(plans), desc=f"importing {gf.path.name}", unit="tensor", disable=not progress) as bar:
        for file_name, shard in zip(names, shards, strict=True):
            # One shard in memory at a time: peak memory is bounded by max_shard_size, not by the model size.
            tensors: dict[str, torch.Tensor] = {}
            for p in shard:
                tensors[p.hf_name] = load_tensor(gf, p, dtype)
                bar.update()
            save_file(tensors, str(out / file_name), metadata={"format": "pt"})
            weight_map |= dict.fromkeys(tensors, file_name)
            del tensors
    if len(shards) > 1:
        total = sum(p.numel for p in plans) * itemsize
        _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


