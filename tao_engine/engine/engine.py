"""The generation engine: continuous batching over a paged KV cache, on the caller's own `nn.Module`.

The engine never copies the weights: it runs the module it was given, so a trainer that updates that module changes
the very next generation. One step = schedule (scheduler.py) -> forward over the paged cache (runner.py) -> sample
(sampler.py) -> append, fork a prompt's n samples, finish.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tao_engine.engine.block_manager import BlockManager
from tao_engine.engine.config import EngineConfig
from tao_engine.engine.kv_allocation import (
    allocate_kv_caches,
    available_memory_bytes,
    kv_cache_bytes_per_block,
    num_blocks_for_budget,
)
from tao_engine.engine.logprob_journal import LogprobJournal
from tao_engine.engine.outputs import (
    FINISH_ABORT,
    FINISH_LENGTH,
    FINISH_STOP,
    RequestMetrics,
    RequestOutput,
    SampleOutput,
)
from tao_engine.engine.prompts import PromptLike, as_prompt_list, encode_prompt
from tao_engine.engine.runner import ModelRunner
from tao_engine.engine.sampler import Sampler
from tao_engine.engine.sampling_params import SamplingParams, resolve_seed, sample_seed
from tao_engine.engine.scheduler import Scheduler, SchedulerConfig
from tao_engine.engine.sequence import ScheduledSeq, SequenceGroup
from tao_engine.engine.sequence import Sequence as Seq
from tao_engine.engine.stop_strings import SampleText
from tao_engine.models.packed_weights import PackedDecoderWeights, choose_packing
from tao_engine.tokenizer import Tokenizer

DEFAULT_KV_FRACTION = 0.25  # of free memory, on CUDA or when EngineConfig.kv_cache_memory_fraction asks for it
DEFAULT_CPU_KV_BYTES = 2 * 2**30  # the CPU default, capped by DEFAULT_KV_FRACTION of available RAM


@dataclass
class _Request:
    output: RequestOutput
    params: SamplingParams
    seed: int
    group: SequenceGroup
    texts: dict[int, SampleText] = field(default_factory=dict)  # by sample index


@dataclass
class EngineStats:
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    steps: int = 0
    preemptions: int = 0
    shared_prompt_blocks: int = 0  # KV blocks that forked samples share instead of holding their own copy


class Engine:
    def __init__(
        self,
        model: nn.Module | str | Path,
        config: EngineConfig | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        if isinstance(model, (str, Path)):
            from tao_engine.pretrained import load_pretrained

            model, loaded_tokenizer = load_pretrained(model, dtype=self.config.dtype, device=self.config.device)
            tokenizer = tokenizer or loaded_tokenizer
        if not hasattr(model, "config") or not hasattr(model, "compute_logits"):
            raise TypeError(
                "Engine: model must be a tao_engine decoder (e.g. from tao_engine.load_pretrained or build_model) or "
                f"a model directory; got {type(model).__name__}"
            )
        self.model = model  # shared, never copied: updates by a trainer reach the next step
        self.tokenizer = tokenizer
        model_config = model.config
        weight = next(model.parameters())
        self.dtype, self.device = weight.dtype, weight.device
        cfg = self.config
        max_model_len = cfg.max_model_len or model_config.max_position_embeddings
        num_blocks = self._kv_blocks(model_config)
        # More blocks than max_num_seqs full-length sequences can use would only waste memory.
        num_blocks = min(num_blocks, cfg.max_num_seqs * -(-max_model_len // cfg.block_size) + 1)
        self.block_bytes = kv_cache_bytes_per_block(model_config, cfg.block_size, self.dtype)
        self.kv_caches = allocate_kv_caches(model_config, num_blocks, cfg.block_size, self.dtype, self.device)
        self.block_manager = BlockManager(num_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_model_len=max_model_len,
                max_num_seqs=cfg.max_num_seqs,
                max_num_batched_tokens=cfg.max_num_batched_tokens,
                enable_chunked_prefill=cfg.enable_chunked_prefill,
                enable_prefix_caching=cfg.enable_prefix_caching,
            ),
            self.block_manager,
        )
        # Why the linears are (not) packed stays readable for `doctor` and the benches.
        self.packing = choose_packing(cfg.pack_linears, model, cfg.compile_decode, self._memory_left())
        packed = PackedDecoderWeights(model, cfg.max_num_seqs) if self.packing.enabled else None
        self.runner = ModelRunner(model, self.kv_caches, cfg.block_size, cfg.compile_decode, packed)
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids) if tokenizer is not None else frozenset(
            _as_ids(model_config.eos_token_id)
        )
        self.sampler = Sampler(self.eos_token_ids, backend=cfg.sampler_backend)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._requests: dict[str, _Request] = {}
        self._ids = itertools.count()
        self._stats = EngineStats()
        self._journal = LogprobJournal()  # sampled log-probs, pending as tensors until an output is read
        self._weights_version = self._current_weights_version()

    def _memory_left(self) -> int | None:
        """Bytes free for new allocations on the engine's device after its KV cache, None where that is unknown."""
        try:
            return available_memory_bytes(self.device)
        except (RuntimeError, ValueError):  # no /proc/meminfo (not Linux), a device type without a probe
            return None

    def _kv_blocks(self, model_config) -> int:
        cfg = self.config
        bs, dtype, device = cfg.block_size, self.dtype, self.device
        if cfg.kv_cache_bytes is not None:
            return num_blocks_for_budget(model_config, bs, dtype, budget_bytes=cfg.kv_cache_bytes, device=device)
        if cfg.kv_cache_memory_fraction is not None or device.type == "cuda":
            fraction = cfg.kv_cache_memory_fraction or DEFAULT_KV_FRACTION
            return num_blocks_for_budget(model_config, bs, dtype, memory_fraction=fraction, device=device)
        # CPU default: host RAM is shared with everything else on the machine, so take at most DEFAULT_CPU_KV_BYTES.
        by_fraction = num_blocks_for_budget(model_config, bs, dtype, memory_fraction=DEFAULT_KV_FRACTION, device=device)
        return min(by_fraction, DEFAULT_CPU_KV_BYTES // kv_cache_bytes_per_block(model_config, bs, dtype))

    # ---- requests -------------------------------------------------------------------------------------------------

    def weights_updated(self) -> None:
        """Forget cached prompt KV computed with older weights. Called automatically when a new request arrives
        while nothing runs and an in-place update (optimizer step) changed a parameter; call it yourself after
        replacing parameter tensors wholesale (`p.data = ...`), which in-place tracking cannot see."""
        if self._requests:
            raise RuntimeError("Engine.weights_updated: requests are running; update weights between generate calls")
        self.block_manager.reset_prefix_cache()
        self.runner.sync_weights()
        self._weights_version = self._current_weights_version()

    def _current_weights_version(self) -> tuple[int, ...]:
        # Every in-place write to a tensor bumps its version counter: an optimizer step shows up here.
        return tuple(p._version for p in self.model.parameters())

    def add_request(self, prompt: PromptLike, params: SamplingParams, request_id: str | None = None) -> RequestOutput:
        """Queue one prompt; returns its output object, filled in place as steps run (final when `.finished`)."""
        return self._add_encoded(encode_prompt(prompt, self.tokenizer), params, request_id)

    def _add_encoded(
        self, encoded: tuple[str | None, list[int]], params: SamplingParams, request_id: str | None = None
    ) -> RequestOutput:
        """Queue a prompt already encoded by `encode_prompt`: (its text or None, its token ids)."""
        if not self._requests:
            if self._current_weights_version() != self._weights_version:
                self.weights_updated()
            else:  # a tensor replaced on the module (load_state_dict(assign=True)) bumps no version
                self.runner.sync_weights()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"Engine.add_request: params must be SamplingParams, got {type(params).__name__}")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self._requests:
            raise ValueError(f"Engine.add_request: request id {request_id!r} is already in use")
        text, ids = encoded
        seed = resolve_seed(params, self.generator)
        samples = [SampleOutput(index=i) for i in range(params.n)]
        metrics = RequestMetrics(time.perf_counter(), num_prompt_tokens=len(ids))
        output = RequestOutput(request_id, text, ids, samples, metrics)
        group = SequenceGroup(request_id, ids, n=params.n, sampling=params, seed=seed)
        self.scheduler.add(group)
        request = _Request(output, params, seed, group)
        self._requests[request_id] = request
        if group.failed:
            self._fail(request, group.error or "request cannot run")
        return output

    def abort(self, request_id: str) -> bool:
        """Stop a request; its samples end with finish reason 'abort'. False when it is unknown or finished."""
        request = self._requests.get(request_id)
        if request is None or not self.scheduler.abort(request_id):
            return False
        for sample in request.output.samples:
            if sample.finish_reason is None:
                sample.finish_reason = FINISH_ABORT
        self._close(request)
        return True

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    # ---- the loop -------------------------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduled step; returns the requests that changed (finished ones for the last time), their
        log-probs up to date."""
        try:
            return self._step()
        finally:
            self._journal.flush()

    def _step(self) -> list[RequestOutput]:
        """One step, with the sampled log-probs left pending in the journal (generate() flushes once at its end)."""
        out = self.scheduler.schedule()
        changed: dict[str, RequestOutput] = {}
        for group in out.failed:
            request = self._requests.get(group.request_id)
            if request is not None:
                self._fail(request, group.error or "request cannot run")
                changed[group.request_id] = request.output
        if out.is_empty:
            return list(changed.values())
        try:
            self._run_step(out, changed)
        except BaseException as exc:  # KeyboardInterrupt included: the engine must stay usable afterwards
            self._abandon_step(out, exc)
            raise
        for request_id in list(changed):
            request = self._requests.get(request_id)
            if request is not None and all(s.finish_reason is not None for s in request.output.samples):
                self._close(request)
        return list(changed.values())

    def _abandon_step(self, out, exc: BaseException) -> None:
        # The requests of a failed step have incomplete KV or a missing token: end them with the error, free their
        # blocks, and keep every other request (and the engine) running.
        for request_id in self.scheduler.abandon_step(out):
            request = self._requests.get(request_id)
            self.scheduler.abort(request_id)
            if request is None:
                continue
            if all(s.finish_reason is not None for s in request.output.samples):
                self._close(request)  # every sample ended before the failure: the output is whole
            else:
                self._fail(request, f"the engine step running this request failed: {type(exc).__name__}: {exc}")

    def _run_step(self, out, changed: dict[str, RequestOutput]) -> None:
        start = time.perf_counter()
        sampled, logits = self.runner.run(out)
        self.scheduler.on_step_done(out)
        rows = self._sample_rows(sampled)
        if rows:
            row_index = [r for r, _ in rows]
            if row_index != list(range(logits.shape[0])):  # a fresh prompt's row repeats for its n samples
                logits = logits[torch.tensor(row_index, dtype=torch.int64, device=logits.device)]
            with torch.profiler.record_function("tao.sample"):  # a range `bench_generate.py --profile` reads
                result = self.sampler(
                    logits,
                    [self._requests[s.request_id].params for _, s in rows],
                    [sample_seed(self._requests[s.request_id].seed, s.sample_index) for _, s in rows],
                    [s.output_token_ids for _, s in rows],
                    [s.prompt_token_ids for _, s in rows] if any(
                        self._requests[s.request_id].params.repetition_penalty != 1.0 for _, s in rows) else None,
                )
            tokens = result.tokens.tolist()  # the scheduler and the stop checks need them now; log-probs can wait
            now = time.perf_counter()
            owners = []
            for (_, seq), token in zip(rows, tokens, strict=True):
                seq = self._fork_if_needed(seq)
                owners.append(self._accept(seq, token, now))
                changed[seq.request_id] = self._requests[seq.request_id].output
            self._journal.append(result.logprobs, result.raw_logprobs, owners)
        self._account(out, time.perf_counter() - start)

    def _sample_rows(self, sampled: list[ScheduledSeq]) -> list[tuple[int, Seq | _PendingSample]]:
        """One sampling row per sequence to extend; a fresh prompt's row serves all n of its samples."""
        rows: list[tuple[int, Seq | _PendingSample]] = []
        for row, item in enumerate(sampled):
            if item.fork:
                group = item.group
                assert group is not None
                # Placeholders for the samples the fork creates; _fork_if_needed swaps in the real sequences.
                rows.extend((row, _PendingSample(group, i)) for i in range(group.n))
            else:
                rows.append((row, item.seq))
        return rows

    def _fork_if_needed(self, seq: Seq | _PendingSample) -> Seq:
        if not isinstance(seq, _PendingSample):
            return seq
        group = seq.group
        if not group.forked:
            self.scheduler.fork_group(group)
            self._stats.shared_prompt_blocks += (group.n - 1) * (len(group.prompt_token_ids) // self.config.block_size)
        return group.seqs[seq.sample_index]

    def _accept(self, seq: Seq, token: int, now: float) -> SampleOutput:
        """Append a sampled token to its sequence and sample, check the stops; returns the sample (whose log-probs
        the journal appends)."""
        request = self._requests[seq.request_id]
        params = request.params
        sample = request.output.samples[seq.sample_index]
        metrics = request.output.metrics
        if metrics.first_token_time is None:
            metrics.first_token_time = now
            metrics.num_cached_prompt_tokens = request.group.parent.num_cached_tokens
        seq.append_token(token)
        sample.token_ids.append(token)
        metrics.num_generated_tokens += 1
        text = request.texts.get(seq.sample_index)
        if text is None and self.tokenizer is not None:
            text = SampleText(self.tokenizer.incremental_decoder(params.skip_special_tokens), params.stop,
                              params.include_stop_str_in_output)
            request.texts[seq.sample_index] = text
        reason: str | None = None
        stop_reason: str | int | None = None
        under_min = len(sample.token_ids) < params.min_tokens
        if text is not None:
            # Under min_tokens nothing may end the sample, stop strings included (as vLLM does).
            hit = text.push(token, check_stop=not under_min)
            if hit is not None:
                reason, stop_reason = FINISH_STOP, hit
        if reason is None and not under_min:
            if token in params.stop_token_ids:
                reason, stop_reason = FINISH_STOP, token
            elif not params.ignore_eos and token in self.eos_token_ids:
                reason, stop_reason = FINISH_STOP, token
        if reason is None and (len(sample.token_ids) >= params.max_tokens or self.scheduler.reached_length_cap(seq)):
            reason = FINISH_LENGTH
        if reason is not None:
            self.scheduler.finish(seq, reason)
            sample.finish_reason, sample.stop_reason = reason, stop_reason
            if text is not None:
                text.finish()
        if text is not None:
            sample.text = text.visible(finished=reason is not None)
        return sample

    def _fail(self, request: _Request, error: str) -> None:
        request.output.error = error
        for sample in request.output.samples:
            sample.finish_reason = sample.finish_reason or FINISH_ABORT
        self._close(request)

    def _close(self, request: _Request) -> None:
        request.output.metrics.finished_time = time.perf_counter()
        self._requests.pop(request.output.request_id, None)

    def _account(self, out, seconds: float) -> None:
        stats = self._stats
        stats.steps += 1
        stats.preemptions += len(out.preempted)
        if out.is_prefill:
            stats.prefill_tokens += out.num_batched_tokens
            stats.prefill_seconds += seconds
        else:
            stats.decode_tokens += out.num_batched_tokens
            stats.decode_seconds += seconds

    # ---- batch API ------------------------------------------------------------------------------------------------

    def stream(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> Iterator[RequestOutput]:
        """Add the prompts and run; yields a request's output each time it changes (the same object, updated in
        place; `text` holds only what can no longer be cut by a stop string). Ends when all are finished."""
        outputs = self._add_all(prompts, sampling)
        ids = {o.request_id for o in outputs}
        for output in outputs:
            if output.finished:
                yield output
        try:
            while any(rid in self._requests for rid in ids):
                for output in self.step():
                    if output.request_id in ids:
                        yield output
        finally:
            for rid in ids:
                if rid in self._requests:
                    self.abort(rid)

    def generate(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
        progress: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text, token ids or chat messages); outputs in prompt order. `on_progress(done,
        total)` is called with the finished samples (all prompts' n together) after each step that finishes some."""
        outputs = self._add_all(prompts, sampling)
        ids = {o.request_id for o in outputs}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(outputs), desc="generate", unit="prompt")
        total_samples = sum(len(o.samples) for o in outputs)
        finished = -1
        try:
            while any(rid in self._requests for rid in ids):
                done = sum(1 for rid in ids if rid not in self._requests)
                self._step()
                if bar is not None:
                    bar.update(sum(1 for rid in ids if rid not in self._requests) - done)
                if on_progress is not None:
                    now = sum(s.finish_reason is not None for o in outputs for s in o.samples)
                    if now != finished:
                        finished = now
                        on_progress(now, total_samples)
        finally:
            self._journal.flush()
            if bar is not None:
                bar.close()
            for rid in ids:
                if rid in self._requests:
                    self.abort(rid)
        return outputs

    def _add_all(self, prompts, sampling) -> list[RequestOutput]:
        items = as_prompt_list(prompts)
        if sampling is None:
            sampling = SamplingParams()
        params = [sampling] * len(items) if isinstance(sampling, SamplingParams) else list(sampling)
        if len(params) != len(items):
            raise ValueError(f"sampling: {len(params)} SamplingParams for {len(items)} prompts; give one or one each")
        # Every prompt encoded before any is queued, so that an error names its index and leaves nothing queued.
        encoded = [encode_prompt(p, self.tokenizer, index=i) for i, p in enumerate(items)]
        return [self._add_encoded(e, sp) for e, sp in zip(encoded, params, strict=True)]

    # ---- stats ----------------------------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        self._stats = EngineStats()

    def stats(self) -> dict[str, float | int]:
        s = self._stats
        return {
            "params": sum(p.numel() for p in self.model.parameters()) - self.model.model.embed_tokens.weight.numel(),
            "prefill_tokens": s.prefill_tokens,
            "decode_tokens": s.decode_tokens,
            "prefill_tok/s": s.prefill_tokens / s.prefill_seconds if s.prefill_seconds else 0.0,
            "decode_tok/s": s.decode_tokens / s.decode_seconds if s.decode_seconds else 0.0,
            "steps": s.steps,
            "preemptions": s.preemptions,
            "kv_blocks_saved": s.shared_prompt_blocks,
            "kv_bytes_saved": s.shared_prompt_blocks * self.block_bytes,
            "prefix_cache_hit_rate": self.block_manager.prefix_hit_rate,
            "kv_blocks": self.block_manager.num_blocks,
            "packed_weight_bytes": 0 if self.runner.packed is None else self.runner.packed.nbytes,
        }


@dataclass(frozen=True)
class _PendingSample:
    group: SequenceGroup
    sample_index: int

    @property
    def request_id(self) -> str:
        return self.group.request_id

    @property
    def output_token_ids(self) -> list[int]:
        return []

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.group.prompt_token_ids


def _as_ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
