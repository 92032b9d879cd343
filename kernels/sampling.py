"""Seeded sampling in Triton without sorting the vocabulary: temperature, top-k, top-p, min-p, greedy rows.

The `triton` backend of `sample` (tao_engine/ops/sampling.py is the specification). One program per row streams the
row in tiles; nothing of size [B, V] is written. Per sampled row:
  1. max, first argmax, min and the raw sum of exp(logits - max) (greedy token, row_max, raw log-prob), one pass;
  2. top-k cutoff = the k-th largest scaled value (scaled = logits / T);
  3. top-p cutoff = the smallest top-k-kept value v whose kept mass strictly above it is < top_p * kept mass;
  4. min-p cutoff = row_max + log(min_p); the row keeps scaled >= max of the cutoffs;
  5. the draw: fp64 running sums of exp(scaled - row_max) over the kept tokens in vocabulary order, and the first
     position whose running sum exceeds u * total, u being the reference's splitmix64 uniform of (seed, step).

Cutoffs by pivot search. FlashInfer samples without a sort by rejection with pivots: it draws a token, takes its
probability as a pivot, sums the mass (or counts the tokens) above the pivot in one pass over the row, and either
accepts or moves the pivot, so each round shrinks the candidate range. Here the pivots are deterministic instead of
drawn: each round places NUM_PIVOTS pivots evenly over the range of order-preserving uint32 keys of the floats that
still holds the cutoff, and one pass over the row counts the tokens (top-k) or sums the fp64 mass (top-p) at or above
every pivot at once; the two pivots that bracket the cutoff become the new range, NUM_PIVOTS + 1 times narrower, and
after at most ceil(32 / log2(NUM_PIVOTS + 1)) = 8 rounds the range is one key wide: the cutoff value exactly. The
same pass keeps, per pivot, the smallest value at or above it and the largest below it, so the search stops as soon
as the range holds a single distinct value (4 to 7 rounds on random [1, 131072] rows, none on a flat row). Random
pivots would make the cutoff (and with it the kept set) depend on the rejection rounds' randomness and the token
depend on how the rounds went; a deterministic search finds the reference's very cutoffs (ties kept or dropped
together, by value), and the draw then inverts the same CDF with the same uniform, so every backend returns the same
token for the same (seed, step) whatever else is in the batch.

Arithmetic is the reference's: scaled = logits / T is an IEEE division (div_rn), weights are fp32 exp (libdevice's
expf on a GPU, the function torch's CUDA exp calls; Triton's own fp32 exp is an approximation) summed in fp64, and
the draw compares fp64 running sums with min(u * total, nextafter(total, 0)). fp64 sums run in another order than
torch's cumsum, which can move a token only when u lands within fp64 rounding of a CDF step.
Greedy rows (T <= 0) take the first maximum (lowest id on ties) and log-prob 0. raw_logprobs = log_softmax(logits)
[token] at T = 1 in fp32. NaN logits are not supported (the reference's handling of NaN is not reproduced).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_BLOCK = 4096  # columns per tile of the one-dimensional passes
MAX_PIVOT_BLOCK = 512  # columns per tile of the pivot passes: a [tile, NUM_PIVOTS] fp64 block lives in registers
NUM_PIVOTS = 16  # pivots per round (a power of two): the key range shrinks 17-fold, 8 rounds resolve 32-bit keys


@triton.jit
def _exp(x, PRECISE: tl.constexpr):
    if PRECISE:
        return libdevice.exp(x)
    else:
        return tl.exp(x)  # the interpreter's numpy exp, already correctly rounded to the last ulp or so


@triton.jit
def _log(x, PRECISE: tl.constexpr):
    if PRECISE:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def _float_key(x):
    # Order-preserving float32 -> [0, 2**32) as int64: non-negative floats above 2**31, negative ones below, reversed.
    bits = x.to(tl.int32, bitcast=True).to(tl.int64)
    return tl.where(bits >= 0, bits + 2147483648, -1 - bits)


@triton.jit
def _key_float(key):
    bits = tl.where(key >= 2147483648, key - 2147483648, -1 - key).to(tl.int32)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _pivots(lo, hi, NUM_PIVOTS: tl.constexpr):
    # [NUM_PIVOTS] keys spread evenly over (lo, hi); every key strictly inside once hi - lo <= NUM_PIVOTS + 1.
    j = tl.arange(0, NUM_PIVOTS).to(tl.int64) + 1
    return lo + ((hi - lo) * j) // (NUM_PIVOTS + 1)


@triton.jit
def _load_scaled(row_ptr, cols, V, temperature):
    x = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
    return tl.math.div_rn(x, temperature)  # logits / T, rounded as torch's division


@triton.jit
def _uniform(seed, step):
    # sampling_uniforms: splitmix64 of (seed, step) in wrapping uint64 arithmetic -> (2 * (key >> 12) + 1) / 2**53.
    x = seed.to(tl.uint64)
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    x = x ^ (x >> 31)
    x = x + (step.to(tl.uint64) + 1) * 0x9E3779B97F4A7C15
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    x = x ^ (x >> 31)
    return ((x >> 12) * 2 + 1).to(tl.float64) * 1.1102230246251565e-16  # 2**-53


@triton.jit
def _narrow(lo, hi, lo_min, hi_max, keys, enough, min_at_or_above, max_below):
    """One round's new range [lo, hi) of keys, from the pivots that hold enough (count or mass) at or above them,
    with the smallest value at or above lo and the largest below hi (both never decrease / increase with the key)."""
    new_lo = tl.maximum(lo, tl.max(tl.where(enough, keys, lo), axis=0))
    new_hi = tl.minimum(hi, tl.min(tl.where(enough, hi, keys), axis=0))
    new_lo_min = tl.maximum(lo_min, tl.max(tl.where(enough, min_at_or_above, float("-inf")), axis=0))
    new_hi_max = tl.minimum(hi_max, tl.min(tl.where(enough, float("inf"), max_below), axis=0))
    return new_lo, new_hi, new_lo_min, new_hi_max


@triton.jit
def _round_start(lo, hi, NUM_PIVOTS: tl.constexpr):
    """One round of a pivot search over the keys (lo, hi): the pivots' keys and values [P], and per pivot, before
    any block, the smallest value at or above it (+inf) and the largest below it (-inf)."""
    keys = _pivots(lo, hi, NUM_PIVOTS)
    inf = tl.zeros((NUM_PIVOTS,), tl.float32) + float("inf")
    return keys, _key_float(keys), inf, -inf


@triton.jit
def _fold_brackets(x, at_or_above, min_at_or_above, max_below):
    """The two bounds of `_round_start` folded over one block: x [BLOCK, 1], at_or_above [BLOCK, P]. When they
    meet, the pivot search's range holds one value and can end early."""
    min_at_or_above = tl.minimum(min_at_or_above, tl.min(tl.where(at_or_above, x, float("inf")), axis=0))
    max_below = tl.maximum(max_below, tl.max(tl.where(at_or_above, float("-inf"), x), axis=0))
    return min_at_or_above, max_below


@triton.jit
def _kth_largest(row_ptr, V, temperature, row_min, row_max, k, BLOCK: tl.constexpr, NUM_PIVOTS: tl.constexpr):
    """The k-th largest scaled value: the largest key lo with count(scaled >= float(lo)) >= k. The search ends
    early once every value in the range [lo, hi) is one value: the k-th, since count(lo) >= k > count(hi)."""
    lo = tl.zeros((), tl.int64) + 0x007FFFFF  # the key of -inf: every value counts
    hi = _float_key(row_max) + 1  # nothing counts
    lo_min = row_min  # the smallest value at or above float(lo)
    hi_max = row_max  # the largest value below float(hi)
    while (hi - lo > 1) & (lo_min != hi_max):
        keys, pivots, min_at_or_above, max_below = _round_start(lo, hi, NUM_PIVOTS)
        counts = tl.zeros((NUM_PIVOTS,), tl.int32)
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = _load_scaled(row_ptr, cols, V, temperature)[:, None]  # [BLOCK, 1]; padding -inf
            at_or_above = (x >= pivots[None, :]) & (cols < V)[:, None]  # [BLOCK, P]
            counts += tl.sum(at_or_above.to(tl.int32), axis=0)
            min_at_or_above, max_below = _fold_brackets(x, at_or_above, min_at_or_above, max_below)
        lo, hi, lo_min, hi_max = _narrow(lo, hi, lo_min, hi_max, keys, counts >= k, min_at_or_above, max_below)
    return tl.where(lo_min == hi_max, lo_min, _key_float(lo))


@triton.jit
def _top_p_cutoff(
    row_ptr, V, temperature, row_max, kth, top_p,
    BLOCK: tl.constexpr, NUM_PIVOTS: tl.constexpr, PRECISE: tl.constexpr,
):  # fmt: skip
    """(cutoff, kept mass at or above it): the largest key lo with mass(scaled >= float(lo)) >= top_p * mass, mass
    over the top-k-kept tokens (scaled >= kth). float(lo) is then the smallest value whose mass strictly above is
    below the budget, the reference's last kept value. Ends early as _kth_largest does: the range [lo, hi) holds
    mass (mass(lo) >= budget > mass(hi)), so when it holds one value, that value is the cutoff."""
    # Below row_max - 110 a weight exp(scaled - row_max) is 0 in fp32 (e**-110 is under half the smallest denormal):
    # no cutoff lies there, and the mass from there up is the whole kept mass.
    lo_value = tl.maximum(kth, row_max - 110.0)
    mass = tl.zeros((), tl.float64)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = _load_scaled(row_ptr, cols, V, temperature)
        w = tl.where(x >= lo_value, _exp(x - row_max, PRECISE), 0.0)
        mass += tl.sum(w.to(tl.float64), axis=0)
    budget = top_p.to(tl.float64) * mass
    lo = _float_key(lo_value)
    hi = _float_key(row_max) + 1
    lo_mass = mass
    # -inf: not known (a range of -inf values only holds no mass, so it never ends the search)
    lo_min = tl.zeros((), tl.float32) + float("-inf")
    hi_max = row_max
    while (hi - lo > 1) & (lo_min != hi_max):
        keys, pivots, min_at_or_above, max_below = _round_start(lo, hi, NUM_PIVOTS)
        masses = tl.zeros((NUM_PIVOTS,), tl.float64)
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = _load_scaled(row_ptr, cols, V, temperature)  # [BLOCK]; padding -inf
            w = tl.where(cols < V, _exp(x - row_max, PRECISE), 0.0).to(tl.float64)[:, None]  # [BLOCK, 1]
            x = x[:, None]
            # pivots >= lo >= kth: a token at or above one is top-k-kept
            at_or_above = x >= pivots[None, :]  # [BLOCK, P]
            masses += tl.sum(tl.where(at_or_above, w, 0.0), axis=0)
            min_at_or_above, max_below = _fold_brackets(x, at_or_above, min_at_or_above, max_below)
        enough = masses >= budget
        lo_mass = tl.minimum(lo_mass, tl.min(tl.where(enough, masses, lo_mass), axis=0))
        lo, hi, lo_min, hi_max = _narrow(lo, hi, lo_min, hi_max, keys, enough, min_at_or_above, max_below)
    return tl.where(lo_min == hi_max, lo_min, _key_float(lo)), lo_mass


@triton.jit
def _kept_mass(row_ptr, V, temperature, row_max, cutoff, BLOCK: tl.constexpr, PRECISE: tl.constexpr):
    """fp64 mass of the kept tokens, accumulated as the draw accumulates it (tile running sums plus a carry)."""
    carry = tl.zeros((), tl.float64)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = _load_scaled(row_ptr, cols, V, temperature)
        w = tl.where((x >= cutoff) & (cols < V), _exp(x - row_max, PRECISE), 0.0).to(tl.float64)
        carry = tl.max(tl.cumsum(w, axis=0) + carry, axis=0)  # the last running sum: sums never decrease
    return carry


@triton.jit
def _draw(row_ptr, V, temperature, row_max, cutoff, target, BLOCK: tl.constexpr, PRECISE: tl.constexpr):
    """The first position whose fp64 running mass of kept tokens exceeds target (the last kept one if rounding
    leaves none: target is below the total, so that only guards against a total summed in another order)."""
    carry = tl.zeros((), tl.float64)
    found = tl.zeros((), tl.int64) + V
    last = tl.zeros((), tl.int64) - 1
    start = tl.zeros((), tl.int64)
    while (start < V) & (found == V):
        cols = start + tl.arange(0, BLOCK)
        x = _load_scaled(row_ptr, cols, V, temperature)
        w = tl.where((x >= cutoff) & (cols < V), _exp(x - row_max, PRECISE), 0.0).to(tl.float64)
        running = tl.cumsum(w, axis=0) + carry  # [BLOCK]
        found = tl.min(tl.where((running > target) & (cols < V), cols, V), axis=0)
        last = tl.maximum(last, tl.max(tl.where(w > 0, cols, -1), axis=0))
        carry = tl.max(running, axis=0)
        start += BLOCK
    return tl.where(found < V, found, tl.maximum(last, 0))


@triton.jit
def _sample_kernel(
    logits_ptr, row_stride, V,
    temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, seeds_ptr, steps_ptr,
    tokens_ptr, logprobs_ptr, raw_ptr,
    BLOCK: tl.constexpr, PIVOT_BLOCK: tl.constexpr, NUM_PIVOTS: tl.constexpr, PRECISE: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    # 1. max, first argmax, min, and sum of exp(logits - max) with the sum rescaled whenever the max grows.
    raw_max = tl.zeros((), tl.float32) + float("-inf")
    raw_min = tl.zeros((), tl.float32) + float("inf")
    arg = tl.zeros((), tl.int64)
    raw_sum = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        tile_max = tl.max(x, axis=0)
        raw_min = tl.minimum(raw_min, tl.min(tl.where(cols < V, x, float("inf")), axis=0))
        tile_arg = tl.min(tl.where((x == tile_max) & (cols < V), cols, V), axis=0).to(tl.int64)
        arg = tl.where(tile_max > raw_max, tile_arg, arg)  # strictly greater: an earlier tile wins ties
        new_max = tl.maximum(raw_max, tile_max)
        raw_sum = raw_sum * _exp(raw_max - new_max, PRECISE) + tl.sum(_exp(x - new_max, PRECISE), axis=0)
        raw_max = new_max

    temperature = tl.load(temperature_ptr + row)
    token = arg
    logprob = tl.zeros((), tl.float32)
    if temperature > 0:
        row_max = tl.math.div_rn(raw_max, temperature)  # max(logits / T) == max(logits) / T
        top_k = tl.load(top_k_ptr + row)
        top_p = tl.load(top_p_ptr + row)
        kth = tl.zeros((), tl.float32) + float("-inf")
        if (top_k > 0) & (top_k < V):
            row_min = tl.math.div_rn(raw_min, temperature)  # min(logits / T) == min(logits) / T
            kth = _kth_largest(row_ptr, V, temperature, row_min, row_max, top_k, PIVOT_BLOCK, NUM_PIVOTS)
        # min-p keeps p >= min_p * p_max, i.e. scaled >= row_max + log(min_p) (-inf when min_p is 0).
        min_p = tl.load(min_p_ptr + row)
        min_p_cut = tl.where(min_p > 0, row_max + _log(tl.where(min_p > 0, min_p, 1.0), PRECISE), float("-inf"))
        cutoff = tl.maximum(kth, min_p_cut)
        total = tl.zeros((), tl.float64)
        if top_p < 1.0:
            p_cut, p_mass = _top_p_cutoff(
                row_ptr, V, temperature, row_max, kth, top_p, PIVOT_BLOCK, NUM_PIVOTS, PRECISE
            )
            cutoff = tl.maximum(p_cut, min_p_cut)
            total = tl.where(p_cut >= min_p_cut, p_mass, total)  # the kept mass, summed already
        if total == 0:
            total = _kept_mass(row_ptr, V, temperature, row_max, cutoff, BLOCK, PRECISE)
        # u * total may round up to total itself; stay strictly below (nextafter(total, 0) of a positive fp64).
        target = _uniform(tl.load(seeds_ptr + row), tl.load(steps_ptr + row)) * total
        target = tl.minimum(target, (total.to(tl.int64, bitcast=True) - 1).to(tl.float64, bitcast=True))
        token = _draw(row_ptr, V, temperature, row_max, cutoff, target, BLOCK, PRECISE)
        value = tl.math.div_rn(tl.load(row_ptr + token).to(tl.float32), temperature)
        logprob = (value - row_max) - _log(total, PRECISE).to(tl.float32)
    tl.store(tokens_ptr + row, token)
    tl.store(logprobs_ptr + row, logprob)
    raw_logit = tl.load(row_ptr + token).to(tl.float32)
    tl.store(raw_ptr + row, tl.minimum((raw_logit - raw_max) - _log(raw_sum, PRECISE), 0.0))


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    interpret: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [B] int64, logprobs [B] fp32, raw_logprobs [B] fp32 of logits [B, V] (fp32/bf16/fp16); per-row
    parameters [B] of any float / integer dtype. interpret: running in triton's CPU interpreter, which has no libdevice
    (numpy's exp / log instead) and where larger pivot tiles cost no registers, only fewer steps."""
    if logits.dim() != 2 or logits.dtype not in SUPPORTED_DTYPES or logits.shape[1] == 0:
        raise ValueError(
            f"sample: logits must be a [B, V] float32, bfloat16 or float16 tensor with V >= 1, got {logits.dtype} "
            f"{tuple(logits.shape)}"
        )
    if logits.shape[1] >= 2**31:
        raise ValueError(f"sample: V = {logits.shape[1]} is too large (token ids are int32 inside the kernel)")
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    rows, vocab = logits.shape
    tokens = torch.empty(rows, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(rows, dtype=torch.float32, device=logits.device)
    raw = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return tokens, logprobs, raw
    block = min(triton.next_power_of_2(vocab), MAX_BLOCK)
    pivot_block = block if interpret else min(block, MAX_PIVOT_BLOCK)
    _sample_kernel[(rows,)](
        logits, logits.stride(0), vocab,
        temperature.float().contiguous(), top_k.long().contiguous(), top_p.float().contiguous(),
        min_p.float().contiguous(), seeds.long().contiguous(), steps.long().contiguous(),
        tokens, logprobs, raw,
        BLOCK=block, PIVOT_BLOCK=pivot_block, NUM_PIVOTS=NUM_PIVOTS, PRECISE=not interpret,
        num_warps=8 if block >= 2048 else 4,
    )  # fmt: skip
    return tokens, logprobs, raw
