"""`tao-engine generate`: prompts from a JSONL file in, samples to a JSONL file out.

Each input line is a JSON object with one of "prompt" (text), "messages" (a chat) or "prompt_token_ids", and an
optional "id". Each output line holds the id, the prompt and, per sample: text, token ids, finish reason and the
cumulative log-prob (per-token log-probs with --logprobs).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tao_engine.engine import Engine, EngineConfig, SamplingParams

_PROMPT_KEYS = ("prompt", "messages", "prompt_token_ids")


def read_prompts(path: Path) -> list[tuple[str, Any]]:
    """(id, prompt) per line; errors name the file, the line and the fix."""
    items: list[tuple[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: each line must be a JSON object")
            present = [k for k in _PROMPT_KEYS if k in record]
            if len(present) != 1:
                raise ValueError(f"{path}:{number}: give exactly one of {list(_PROMPT_KEYS)}, found {present}")
            items.append((str(record.get("id", f"line-{number}")), record[present[0]]))
    if not items:
        raise ValueError(f"{path}: no prompts found (one JSON object per line)")
    return items


def run_generate(args: Any) -> int:
    items = read_prompts(Path(args.input))
    from tao_engine.bundled import smollm2_dir

    model = args.model if args.model is not None else smollm2_dir()
    config = EngineConfig(dtype=args.dtype, max_num_seqs=args.max_num_seqs, block_size=args.block_size)
    engine = Engine(model, config)
    sampling = SamplingParams(
        n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        max_tokens=args.max_tokens, seed=args.seed, stop=tuple(args.stop or ()),
    )
    start = time.perf_counter()
    outputs = engine.generate([p for _, p in items], sampling, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    generated = 0
    with tmp.open("w", encoding="utf-8") as f:
        for (item_id, _), out in zip(items, outputs, strict=True):
            samples = []
            for s in out.samples:
                generated += len(s.token_ids)
                sample = {"text": s.text, "token_ids": s.token_ids, "finish_reason": s.finish_reason,
                          "cumulative_logprob": s.cumulative_logprob}
                if args.logprobs:
                    sample["logprobs"] = s.logprobs
                    sample["raw_logprobs"] = s.raw_logprobs
                samples.append(sample)
            record = {"id": item_id, "prompt": out.prompt, "error": out.error, "samples": samples}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
    stats = engine.stats()
    print(
        f"{len(items)} prompts x {args.n} samples: {generated} tokens in {elapsed:.1f}s "
        f"({generated / elapsed:.1f} tok/s; prefill {stats['prefill_tok/s']:.0f} tok/s, decode "
        f"{stats['decode_tok/s']:.0f} tok/s) -> {out_path}",
        file=sys.stderr,
    )
    return 0
