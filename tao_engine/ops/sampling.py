"""Batched, seeded sampling of one token per row: temperature, top-k, top-p, min-p, greedy rows.

sample(logits [B, V], temperature [B] fp32, top_k [B] int64, top_p [B] fp32, min_p [B] fp32, seeds [B] int64,
       steps [B] int64) -> (tokens [B] int64, logprobs [B] fp32, raw_logprobs [B] fp32)

Per row:
- temperature 0: greedy, argmax of the logits (lowest id on ties); logprob 0.0 (the filtered distribution is a
  point mass).
- otherwise, on scaled = logits / T, every filter keeps the tokens whose scaled logit is >= a per-row cutoff, so
  tied tokens are kept or dropped together and the kept set never depends on sort order:
    top-k (k >= 1, 0 or -1 = off): cutoff = the k-th largest scaled logit;
    top-p (1 = off): over the top-k-filtered, renormalized distribution sorted by probability, keep a token while
      the mass strictly before it is < top_p (the top token always stays); cutoff = the last kept logit;
    min-p (0 = off): keep p >= min_p * p_max, i.e. scaled - max(scaled) >= log(min_p) (order-free: a ratio).
  The token is drawn from the renormalized filtered distribution by inverting its CDF with one uniform
  u in (0, 1) per row. u is a counter-based hash (splitmix64) of (seeds[b], steps[b]) only, so a row's draw does
  not depend on the other rows, on B or on the row's position; no torch generator is involved.
  logprob = log of the drawn token's probability under that renormalized filtered distribution.
- raw_logprobs = log_softmax(logits)[token]: temperature 1, no filtering (through the `token_logprobs` op, which
  does it in one pass where a compiled backend is available).

One uniform per row rather than a Gumbel/exponential race over [B, V]: the race needs a 64-bit hash of every
(row, token) pair, about 30 ms on [64, 49152] on 2 CPU cores, more than the rest of the op; the CDF inversion needs
a [B] hash and one cumulative sum. The CDF runs in vocabulary order; when every kept token of every row lies among
the row's W largest logits (top-k, a nucleus that ends early, greedy rows), the op runs it over those W columns put
back in vocabulary order, which gives the same draw without a [B, V] pass.
Parameter values are validated by `SamplingParams`; this op checks shapes and dtypes only (value checks would cost
a device sync per step).
"""

from __future__ import annotations

from typing import Any

import torch

from tao_engine.ops.logprobs import token_logprobs
from tao_engine.ops.registry import define_op


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed64(0x9E3779B97F4A7C15)
_MIX1 = _signed64(0xBF58476D1CE4E5B9)
_MIX2 = _signed64(0x94D049BB133111EB)
# Rows whose top-p runs without top-k look at their largest logits in growing prefixes (topk is much cheaper than a
# sort on CPU, and cheaper the narrower it is: on [64, 49152] fp32, 2 cores, topk 256 takes ~4 ms, topk 1024 ~15 ms,
# a full sort ~130 ms); only when the nucleus ends in none does the op sort the whole vocabulary. Peaked LLM
# distributions end early: SmolLM2 chat rows at T=0.7, top-p 0.9 keep 1 to ~90 tokens.
_TOP_P_WIDTHS = (256, 2048)
_MASS_CHUNK = 4096  # columns per step of the whole-row mass sum


def _shift_right_logical(x: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic (copies the sign bit); mask the copies off.
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    # splitmix64's finalizer on int64 tensors; multiplications wrap modulo 2**64 as the uint64 original does.
    x = (x ^ _shift_right_logical(x, 30)) * _MIX1
    x = (x ^ _shift_right_logical(x, 27)) * _MIX2
    return x ^ _shift_right_logical(x, 31)


def sampling_uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uniform per row in (0, 1), fp64, from (seed, step) alone: [B] int64, [B] int64 -> [B] fp64."""
    key = _mix64(_mix64(seeds.long()) + (steps.long() + 1) * _GOLDEN)
    # 52 random bits x -> (2x + 1) / 2**53: exact in fp64, never 0 or 1.
    return (_shift_right_logical(key, 12) * 2 + 1).double() * 2.0**-53


def sample_reference(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_inputs(logits, temperature, top_k, top_p, min_p, seeds, steps)
    logits = logits.float()
    greedy = temperature <= 0  # [B]
    any_greedy = bool(greedy.any())
    # argmax returns the first maximum (lowest id on ties), for greedy rows; it is ~8x slower than amax on CPU, so
    # sampled-only batches take the maximum alone.
    tokens = logits.argmax(dim=-1) if any_greedy else None  # [B]
    logprobs = torch.zeros(logits.shape[:1], dtype=torch.float32, device=logits.device)
    if tokens is None or not bool(greedy.all()):
        temp = torch.where(greedy, torch.ones_like(temperature), temperature).float()
        # logits / T is never materialized on the common path: dividing by T > 0 is monotone under rounding too, so
        # the largest scaled logits are the largest logits, divided (the same fp32 values), and so is max(scaled).
        scale = None if bool((temp == 1.0).all()) else temp[:, None]  # [B, 1]
        top_logit = logits.amax(dim=-1) if tokens is None else logits.gather(1, tokens[:, None]).squeeze(1)
        row_max = top_logit / temp  # [B]
        # Greedy rows are drawn as top-k 1 (their draw is discarded) so they never force the whole-vocabulary path.
        top_k = torch.where(greedy, torch.ones_like(top_k), top_k)
        top_p = torch.where(greedy, torch.ones_like(top_p), top_p).float()
        cutoff, top = _cutoffs(logits, scale, row_max, top_k, top_p, min_p.float())
        uniforms = sampling_uniforms(seeds, steps)  # [B] fp64
        if top is not None and top[0].shape[1] < logits.shape[1] and bool((top[0][:, -1] < cutoff).all()):
            # Every kept token is among the columns of `top`: whatever lies beyond them is below the cutoff.
            drawn, drawn_logprobs = _draw_among_top(top[0], top[1], cutoff, row_max, uniforms)
        else:
            scaled = _scaled(logits, scale)  # [B, V]
            ids = torch.arange(scaled.shape[1], device=scaled.device).expand_as(scaled)  # [B, V]
            drawn, drawn_logprobs = _draw(scaled, ids, cutoff, row_max, uniforms)
        if tokens is None:
            tokens, logprobs = drawn, drawn_logprobs
        else:
            tokens = torch.where(greedy, tokens, drawn)
            logprobs = torch.where(greedy, logprobs, drawn_logprobs)
    assert tokens is not None  # argmax ran unless some row samples
    # log_softmax(logits)[token]; the token_logprobs op does it in one pass where a compiled backend is available.
    return tokens, logprobs, token_logprobs(logits, tokens)


def _draw_among_top(
    values: torch.Tensor, indices: torch.Tensor, cutoff: torch.Tensor, row_max: torch.Tensor, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The draw of `_draw` when every kept token is among the W largest: the same CDF in vocabulary order, without
    the zeros of the dropped tokens. values, indices [B, W] from topk/sort."""
    order = indices.argsort(dim=-1)  # [B, W]: back to vocabulary order
    return _draw(values.gather(1, order), indices.gather(1, order), cutoff, row_max, uniforms)


def _draw(
    values: torch.Tensor, ids: torch.Tensor, cutoff: torch.Tensor, row_max: torch.Tensor, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert the CDF, in vocabulary order, of the tokens with value >= cutoff: values, ids [B, W] (ids ascending;
    W = V with ids = arange(V), or a subset holding every kept token) -> tokens [B], their log-probs [B]."""
    # Unnormalized filtered probabilities; the top token always survives every filter, so every row keeps mass.
    weights = torch.exp(values - row_max[:, None])  # [B, W]
    if bool((cutoff > float("-inf")).any()):
        weights.masked_fill_(values < cutoff[:, None], 0.0)
    # fp64: a running fp32 sum would round away the mass of unlikely tokens late in the row.
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)  # [B, W]
    total = cdf[:, -1:]  # [B, 1]
    # u * total may round up to total itself; stay strictly below so the search lands on a token with mass.
    target = torch.minimum(uniforms[:, None] * total, torch.nextafter(total, total * 0))
    # First position whose cumulative mass exceeds the target: position j with probability weights[j] / total.
    pos = torch.searchsorted(cdf, target, right=True).clamp_(max=values.shape[1] - 1)  # [B, 1]
    logprobs = (values.gather(1, pos) - row_max[:, None]).squeeze(1) - torch.log(total.squeeze(1)).float()
    return ids.gather(1, pos).squeeze(1), logprobs


def _scaled(logits: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """logits / T: `scale` is T [B, 1], or None when every row has T = 1."""
    return logits if scale is None else logits / scale


def _cutoffs(
    logits: torch.Tensor,
    scale: torch.Tensor | None,
    row_max: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """[B] cutoff of all three filters (keep scaled = logits / T >= cutoff; -inf: keep all), and the (values,
    indices) [B, W] of each row's W largest scaled logits, descending, when top-k or top-p needed them (else None)."""
    vocab = logits.shape[1]
    min_p_cut = row_max + torch.log(min_p)  # p >= min_p * p_max, in log space; -inf where min_p is 0
    use_k = (top_k > 0) & (top_k < vocab)
    use_p = top_p < 1.0
    if not bool((use_k | use_p).any()):
        return min_p_cut, None
    # One column past the largest k, so a row can tell that no tie of its k-th logit lies beyond the columns.
    k_width = min(int(torch.where(use_k, top_k, 0).max()) + 1, vocab)
    p_only = use_p & ~use_k  # rows whose nucleus may reach anywhere in the vocabulary
    widths = [k_width]
    if bool(p_only.any()):
        widths = sorted({max(k_width, w) for w in _TOP_P_WIDTHS if max(k_width, w) < vocab}) + [vocab]
    kth = None
    row_mass = None
    for width in widths:
        if width == vocab:
            top = logits.sort(dim=-1, descending=True)
        else:
            top = logits.topk(width, dim=-1, sorted=True)
        # [B, width], scaled; ties in any order: only values decide
        values, indices = _scaled(top.values, scale), top.indices
        if kth is None:  # the k-th largest value: the same at every width >= k
            kth = values.gather(1, (top_k.clamp(min=1, max=width) - 1)[:, None]).squeeze(1)  # [B]
            kth = torch.where(use_k, kth, torch.full_like(kth, float("-inf")))
        if not bool(use_p.any()):
            return torch.maximum(kth, min_p_cut), (values, indices)
        # The columns hold all the top-k-kept mass of a row when its last column is below the k-th logit; otherwise
        # (top-k off, or ties of the k-th logit reaching the last column) the mass comes from the whole row, once.
        in_columns = values[:, -1] < kth if width < vocab else torch.ones_like(use_p)
        if row_mass is None and not bool(in_columns.all()):
            row_mass = _kept_mass(logits, scale, row_max, kth, mask_below_kth=bool(use_k.any()))
        p_cut, complete = _top_p_cutoff(values, row_max, kth, top_p, in_columns, row_mass)
        if width == vocab or bool((complete | ~p_only).all()):
            return torch.maximum(torch.where(use_p, p_cut, kth), min_p_cut), (values, indices)
    raise AssertionError("unreachable: the last width is the whole vocabulary")


def _kept_mass(
    logits: torch.Tensor, scale: torch.Tensor | None, row_max: torch.Tensor, kth: torch.Tensor, mask_below_kth: bool
) -> torch.Tensor:
    """[B] fp64 sum over each row of exp(scaled - row_max), the fp32 weights `_draw` computes, of the tokens >= kth.

    Column chunks keep the temporaries small and cache-resident: no [B, V] scaled logits or weights and no [B, V]
    fp64 copy (which `sum(dtype=float64)` makes), each a fresh multi-megabyte allocation per step. Without top-k (kth
    -inf everywhere) the mask would drop nothing and is skipped."""
    mass = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
    for chunk in logits.split(_MASS_CHUNK, dim=1):
        scaled = chunk / scale if scale is not None else chunk.clone()  # [B, chunk], overwritten below
        below = scaled < kth[:, None] if mask_below_kth else None
        weights = scaled.sub_(row_max[:, None]).exp_()
        if below is not None:
            weights.masked_fill_(below, 0.0)
        mass += weights.sum(dim=-1, dtype=torch.float64)
    return mass


def _top_p_cutoff(
    values: torch.Tensor,
    row_max: torch.Tensor,
    kth: torch.Tensor,
    top_p: torch.Tensor,
    in_columns: torch.Tensor,
    row_mass: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p cutoff over the top-k-kept tokens, and whether the nucleus ended inside the `values` columns [B, W].
    Rows with `in_columns` take the top-k-kept mass from the columns, the others from `row_mass`."""
    in_k = values >= kth[:, None]  # [B, W]
    weights = torch.exp(values - row_max[:, None]).masked_fill_(~in_k, 0.0)  # same fp32 values as `_draw` computes
    inclusive = weights.cumsum(dim=-1, dtype=torch.float64)  # [B, W], unnormalized: compare with top_p * mass
    mass = inclusive[:, -1] if row_mass is None else torch.where(in_columns, inclusive[:, -1], row_mass)  # [B]
    budget = top_p.double() * mass
    keep = in_k & (inclusive - weights < budget[:, None])  # mass strictly before < top_p: a prefix, column 0 always
    last = keep.sum(dim=-1, keepdim=True) - 1  # [B, 1]
    return values.gather(1, last).squeeze(1), inclusive[:, -1] >= budget


def _check_inputs(logits: torch.Tensor, *params: torch.Tensor) -> None:
    if logits.dim() != 2 or not logits.dtype.is_floating_point or logits.shape[1] == 0:
        raise ValueError(
            f"sample: logits must be a float [B, V] tensor with V >= 1, got {logits.dtype} {tuple(logits.shape)}"
        )
    rows = logits.shape[0]
    for name, tensor in zip(_PARAM_NAMES, params, strict=True):
        if tensor.shape != (rows,):
            raise ValueError(
                f"sample: {name} must be [B] = [{rows}] (one value per logits row), got {tuple(tensor.shape)}"
            )
        if tensor.device != logits.device:
            raise ValueError(f"sample: {name} is on {tensor.device} but logits are on {logits.device}")
        want_float = name in ("temperature", "top_p", "min_p")
        if tensor.dtype.is_floating_point != want_float or tensor.dtype == torch.bool:
            kind = "a float" if want_float else "an integer (int64)"
            raise ValueError(f"sample: {name} must be {kind} tensor, got {tensor.dtype}")


sample = define_op("sample", sample_reference)
_PARAM_NAMES = sample.Args._fields[1:]  # the per-row parameters: temperature, top_k, top_p, min_p, seeds, steps


# --- cpp and cuda backends (csrc/cpu/sampling*.{h,cpp}, csrc/cuda/sampling*.{cu,cpp}): `torch.ops.tao_engine.sample`,
# with a fake kernel (below). The same tokens as the reference: the same cutoffs (top-k by selection, top-p by a
# search over mass instead of a sort on CPU, radix selection over the values on CUDA, one block per row), the same
# splitmix64 uniform and the same fp64 CDF inversion in vocabulary order; only exp's last-ulp rounding differs from
# torch's. The extension loads in the probe, on first use, never at import time.
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402

_LOGITS_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _sample_compiled(a: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_inputs(*a)  # the reference's errors, word for word
    # The kernel takes exactly fp32 / int64 parameters; the reference accepts any float / integer dtype.
    return torch.ops.tao_engine.sample(
        a.logits, a.temperature.float(), a.top_k.long(), a.top_p.float(), a.min_p.float(), a.seeds.long(),
        a.steps.long(),
    )  # fmt: skip


def _logits_dtype(a: Any) -> tuple[bool, str]:
    if a.logits.dtype not in _LOGITS_DTYPES:
        return False, f"logits must be float32, bfloat16 or float16, got {a.logits.dtype}"
    return True, ""


def _sample_cpp_supports(a: Any) -> tuple[bool, str]:
    devices = {t.device.type for t in a if isinstance(t, torch.Tensor)}
    if devices != {"cpu"}:
        return False, f"logits and the per-row parameters must all be CPU tensors, got {sorted(devices)}"
    return _logits_dtype(a)


def _sample_cuda_supports(a: Any) -> tuple[bool, str]:
    devices = {t.device for t in a if isinstance(t, torch.Tensor)}
    if len(devices) != 1 or a.logits.device.type != "cuda":
        found = sorted(map(str, devices))
        return False, f"logits and the per-row parameters must all be on one CUDA device, got {found}"
    return _logits_dtype(a)


sample.register("cpp", _sample_compiled, cpu_backend_probe, _sample_cpp_supports)
sample.register("cuda", _sample_compiled, cuda_backend_probe, _sample_cuda_supports)


# --- triton backend (kernels/sampling.py): one program per row, cutoffs by deterministic pivot search over the
# values (no sort), the same splitmix64 uniform and fp64 CDF inversion; the kernel module loads on first call.
from tao_engine.ops import triton_support  # noqa: E402


def _sample_triton(a: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_inputs(*a)  # the reference's errors, word for word
    # On a GPU the kernel calls libdevice's exp / log (torch's own on CUDA); triton's CPU interpreter has no libdevice.
    interpret = triton_support.interpret_mode()
    return triton_support.kernel_module("sampling").sample(*a, interpret=interpret)


def _sample_triton_supports(a: Any) -> tuple[bool, str]:
    ok, why = triton_support.device_supported(*(t for t in a if isinstance(t, torch.Tensor)))
    return triton_support.dtype_supported("logits", a.logits, _LOGITS_DTYPES) if ok else (ok, why)


sample.register("triton", _sample_triton, triton_support.triton_probe, _sample_triton_supports)


# Inference only (tokens are not differentiable): a fake kernel, applied when `_C` loads (ops/extension.py).
def _sample_fake(logits: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch._check(logits.dim() == 2, lambda: f"tao_engine::sample: logits must be [B, V], got {tuple(logits.shape)}")
    rows = logits.shape[0]
    for name, param in zip(_PARAM_NAMES, params, strict=True):
        torch._check(
            param.dim() == 1 and param.shape[0] == rows,
            lambda name=name, param=param: f"tao_engine::sample: {name} must be [B], got {tuple(param.shape)}",
        )
    tokens = logits.new_empty((rows,), dtype=torch.int64)  # [B]
    return tokens, logits.new_empty((rows,), dtype=torch.float32), logits.new_empty((rows,), dtype=torch.float32)


sample.register_compiled("tao_engine::sample", _sample_fake)
