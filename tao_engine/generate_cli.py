"""`tao-engine generate`: prompts from a JSONL file in, samples to a JSONL file out.

Each input line is a JSON object with one of "prompt" (text), "messages" (a chat) or "prompt_token_ids", and an
optional "id". A "prompt" goes to the model as one user turn of its chat template (when it has one);
--no-chat-template sends the text raw. Each output line holds the id, the prompt and, per sample: text, token ids,
finish reason and the cumulative log-prob (per-token log-probs with --logprobs). A prompt that cannot run (token ids
outside the vocabulary, prompt + max_tokens past what the engine holds) gets an "error" on its line instead of
samples, the others are served, and the command exits 1 saying how many failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tao_engine.cli_flags import DataclassFlags
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.engine.prompt_fit import prompt_problem
from tao_engine.engine.prompts import as_user_turn, plain_prompt_rendering
from tao_engine.output_paths import check_output_file
from tao_engine.text_lines import json_object_lines

_PROMPT_KEYS = ("prompt", "messages", "prompt_token_ids")
# A command run writes answers (128 tokens, not the 16 of OpenAI's legacy completions that SamplingParams keeps) and
# the same file gives the same samples run after run (seed 0, not a seed drawn per request).
SAMPLING = DataclassFlags(SamplingParams(max_tokens=128, seed=0),
                          ("n", "temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "seed"))
ENGINE = DataclassFlags(EngineConfig(), ("dtype", "block_size", "max_num_seqs"))


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF-layout model directory; default: bundled SmolLM2-135M-Instruct")
    p.add_argument("--input", required=True, help="JSONL, one object a line: prompt (text: one user turn of the "
                   "chat template) | messages (a chat) | prompt_token_ids")
    p.add_argument("--no-chat-template", dest="chat_template", action="store_false", help="send a plain \"prompt\" "
                   "as raw text instead of one user turn of the model's chat template")
    p.add_argument("--output", required=True, help="JSONL file to write (atomically)")
    p.add_argument("--logprobs", action="store_true", help="write per-token log-probs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    SAMPLING.add_to(p)
    ENGINE.add_to(p)


def read_prompts(path: Path) -> list[tuple[str, Any]]:
    """(id, prompt) per line; errors name the file, the line and the fix."""
    if not path.is_file():
        raise FileNotFoundError(f"--input {path}: no such file" if not path.exists() else
                                f"--input {path} is not a file; give a JSONL file")
    items: list[tuple[str, Any]] = []
    for number, record in json_object_lines(path):
        present = [k for k in _PROMPT_KEYS if k in record]
        if len(present) != 1:
            raise ValueError(f"{path}:{number}: give exactly one of {list(_PROMPT_KEYS)}, found {present}")
        prompt = record[present[0]]
        if present[0] == "prompt_token_ids" and not (
                isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt)):
            raise ValueError(f"{path}:{number}: prompt_token_ids must be a non-empty list of integers")
        items.append((str(record.get("id", f"line-{number}")), prompt))
    if not items:
        raise ValueError(f"{path}: no prompts found (one JSON object per line)")
    return items


def run_generate(args: Any) -> int:
    items = read_prompts(Path(args.input))
    out_path = check_output_file(args.output, "--output")  # before the model loads, not after the work is done
    sampling, config = SAMPLING.build(args), ENGINE.build(args)
    from tao_engine.bundled import smollm2_dir

    engine = Engine(args.model if args.model is not None else smollm2_dir(), config)
    print("tao-engine generate: " + plain_prompt_rendering(engine.tokenizer, args.chat_template, "--no-chat-template",
                                                           "leave out --no-chat-template"), file=sys.stderr)
    prompts = [as_user_turn(prompt, engine.tokenizer, args.chat_template) for _, prompt in items]
    # A prompt that cannot run (bad token ids, too long for prompt + max_tokens) gets its error on its own line;
    # the others are served.
    problems = [prompt_problem(engine, prompt, sampling.max_tokens) for prompt in prompts]
    runnable = [i for i, problem in enumerate(problems) if problem is None]
    start = time.perf_counter()
    outputs = engine.generate([prompts[i] for i in runnable], sampling, progress=not args.quiet) if runnable else []
    elapsed = time.perf_counter() - start
    by_item = dict(zip(runnable, outputs, strict=True))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    generated = failed = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for i, (item_id, prompt) in enumerate(items):
                out = by_item.get(i)
                record = _record(item_id, prompt, out, problems[i], args.logprobs)
                failed += record["error"] is not None
                generated += sum(len(s["token_ids"]) for s in record["samples"])
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stats = engine.stats()
    print(
        f"{len(items)} prompts x {sampling.n} samples: {generated} tokens in {elapsed:.1f}s "
        f"({generated / max(elapsed, 1e-9):.1f} tok/s; prefill {stats['prefill_tok/s']:.0f} tok/s, decode "
        f"{stats['decode_tok/s']:.0f} tok/s) -> {out_path}",
        file=sys.stderr,
    )
    if failed:
        print(f"tao-engine generate: {failed} of {len(items)} prompts failed; each has its \"error\" in {out_path}",
              file=sys.stderr)
        return 1
    return 0


def _record(item_id: str, prompt: Any, out: Any, problem: str | None, logprobs: bool) -> dict[str, Any]:
    if out is None:  # refused before generation
        return {"id": item_id, "prompt": prompt if isinstance(prompt, str) else None, "error": problem, "samples": []}
    samples = []
    for s in out.samples:
        sample = {"text": s.text, "token_ids": s.token_ids, "finish_reason": s.finish_reason,
                  "cumulative_logprob": s.cumulative_logprob}
        if logprobs:
            sample["logprobs"] = s.logprobs
            sample["raw_logprobs"] = s.raw_logprobs
        samples.append(sample)
    return {"id": item_id, "prompt": out.prompt, "error": out.error, "samples": samples}
