"""The `sample` op (torch reference) against an independent fp64 per-row reference: kept sets, drawn tokens,
log-probs; frequencies against probabilities; greedy rows; independence of a row's draw from the rest of the batch."""

from __future__ import annotations

import math

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.registry import all_ops
from tao_engine.ops.sampling import sampling_uniforms
from tests.tolerances import check

MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    x &= MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _uniform(seed: int, step: int) -> float:
    """The op's per-row uniform, written with Python's unbounded ints (uint64 arithmetic spelled out)."""
    key = _mix64((_mix64(seed) + (step + 1) * 0x9E3779B97F4A7C15) & MASK64)
    return ((key >> 12) * 2 + 1) * 2.0**-53


def _reference_row(logits: torch.Tensor, t: float, k: int, p: float, m: float) -> torch.Tensor:
    """fp64 probabilities [V] of the filtered, renormalized distribution of one row (one-hot argmax if t == 0)."""
    vocab = logits.shape[0]
    if t == 0:
        return torch.nn.functional.one_hot(logits.argmax(), vocab).double()
    # Scale in fp32 as the op does, so both see the same values (and ties); everything after is fp64.
    scaled = (logits.float() / torch.tensor(t, dtype=torch.float32)).double()
    keep = torch.ones(vocab, dtype=torch.bool)
    if 0 < k < vocab:
        keep &= scaled >= scaled.sort(descending=True).values[k - 1]
    if p < 1:
        probs = torch.softmax(scaled.masked_fill(~keep, -math.inf), dim=0)
        ordered = probs.sort(descending=True).values
        mass_before = 0.0
        threshold = ordered[0]
        for q in ordered.tolist():
            if mass_before >= p or q == 0:
                break
            threshold = q
            mass_before += q
        keep &= probs >= threshold
    if m > 0:
        probs = torch.softmax(scaled, dim=0)
        keep &= probs >= m * probs.max()
    return torch.softmax(scaled.masked_fill(~keep, -math.inf), dim=0)


def _inverse_cdf(probs: torch.Tensor, u: float) -> int:
    return int(
        torch.searchsorted(probs.cumsum(0), torch.tensor([u], dtype=torch.float64), right=True).clamp(
            max=probs.shape[0] - 1
        )
    )


def _args(rows: list[tuple[float, int, float, float]], seeds, steps) -> tuple[torch.Tensor, ...]:
    t, k, p, m = zip(*rows, strict=True)
    return (
        torch.tensor(t, dtype=torch.float32),
        torch.tensor(k, dtype=torch.int64),
        torch.tensor(p),
        torch.tensor(m),
        torch.as_tensor(seeds, dtype=torch.int64),
        torch.as_tensor(steps, dtype=torch.int64),
    )


# (temperature, top_k, top_p, min_p): every filter alone, combined, greedy, off
PARAM_CYCLE = [
    (1.0, 0, 1.0, 0.0),
    (0.7, 0, 0.9, 0.0),
    (1.3, 5, 1.0, 0.0),
    (0.0, 0, 1.0, 0.0),
    (0.8, 20, 0.7, 0.0),
    (1.0, 0, 1.0, 0.05),
    (0.5, 50, 0.95, 0.01),
    (1.0, -1, 0.5, 0.0),
    (2.0, 1, 1.0, 0.0),
]
# Only rows whose kept tokens lie among their largest logits (top-k, a short nucleus, greedy): the op then inverts
# the CDF over those columns alone instead of over the whole vocabulary.
FILTERED_CYCLE = [
    (0.7, 0, 0.9, 0.0),
    (1.3, 5, 1.0, 0.0),
    (0.0, 0, 1.0, 0.0),
    (0.8, 20, 0.7, 0.0),
    (0.5, 50, 0.95, 0.01),
    (1.0, -1, 0.5, 0.0),
    (2.0, 1, 1.0, 0.0),
    (1.0, 7, 1.0, 0.2),
]
CYCLES = {"mixed": PARAM_CYCLE, "filtered": FILTERED_CYCLE}


def test_registered_and_exported():
    assert "sample" in all_ops()
    assert ops.sample is all_ops()["sample"]


def test_uniforms_are_the_splitmix64_hash_of_seed_and_step():
    seeds = [0, 1, -1, 2**63 - 1, -(2**63), 123456789012345, -98765]
    steps = [0, 5, 1, 1000, 7, 0, 2**40]
    got = sampling_uniforms(torch.tensor(seeds), torch.tensor(steps))
    assert got.dtype == torch.float64
    expected = torch.tensor([_uniform(s & MASK64, t) for s, t in zip(seeds, steps, strict=True)], dtype=torch.float64)
    assert torch.equal(got, expected)
    assert bool(((got > 0) & (got < 1)).all())


@pytest.mark.parametrize("cycle", sorted(CYCLES))
@pytest.mark.parametrize(
    ("rows", "vocab", "scale"),
    [(3, 1, 1.0), (1, 7, 2.0), (9, 129, 3.0), (18, 4099, 3.0), (9, 4099, 0.05), (4, 49152, 4.0)],
)
def test_matches_fp64_reference(rows, vocab, scale, cycle):
    # scale 0.05 on 4099 tokens is nearly flat: top-p's nucleus outgrows the first 1024 logits and the op sorts all.
    gen = torch.Generator().manual_seed(rows * 7919 + vocab)
    logits = torch.randn(rows, vocab, generator=gen) * scale
    params = [CYCLES[cycle][(i + vocab) % len(CYCLES[cycle])] for i in range(rows)]
    seeds = torch.randint(-(2**62), 2**62, (rows,), generator=gen)
    steps = torch.randint(0, 1000, (rows,), generator=gen)
    tokens, logprobs, raw = ops.sample(logits, *_args(params, seeds, steps), backend="torch")
    assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32 and raw.dtype == torch.float32
    expected = []
    for row, (t, k, p, m) in enumerate(params):
        probs = _reference_row(logits[row], t, k, p, m)
        token = int(tokens[row])
        assert probs[token] > 0, f"row {row} {params[row]}: drew token {token}, which the filters remove"
        if t > 0:
            assert token == _inverse_cdf(probs, _uniform(int(seeds[row]) & MASK64, int(steps[row])))
        expected.append(math.log(probs[token]))
    temperatures = torch.tensor([t for t, *_ in params])
    check("sample_logprobs", logprobs, torch.tensor(expected, dtype=torch.float64), logits=logits, tokens=tokens,
          temperature=temperatures)
    raw_ref = torch.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    check("token_logprobs", raw, raw_ref, logits=logits, targets=tokens)


def test_greedy_rows_take_the_lowest_id_among_tied_maxima():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 333, generator=gen)
    logits[0, [17, 40, 300]] = 9.0  # tie: 17 must win
    logits[1, [0, 332]] = 9.0
    logits[2, 200] = 9.0
    params = [(0.0, 0, 1.0, 0.0), (0.0, 3, 0.5, 0.1), (0.0, 0, 1.0, 0.0), (0.0, 0, 1.0, 0.0), (0.0, 0, 1.0, 0.0)]
    tokens, logprobs, raw = ops.sample(logits, *_args(params, range(5), [4] * 5), backend="torch")
    assert tokens.tolist()[:3] == [17, 0, 200]
    assert torch.equal(tokens, logits.argmax(dim=-1))
    assert torch.equal(logprobs, torch.zeros(5))
    expected_raw = torch.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    check("token_logprobs", raw, expected_raw, logits=logits, targets=tokens)


def test_tied_logits_at_the_cutoffs_are_kept_or_dropped_together():
    # Logits on a coarse grid: many ties at the top-k and top-p boundaries. The kept set is defined by value.
    gen = torch.Generator().manual_seed(11)
    rows, vocab = 64, 97
    logits = (torch.randn(rows, vocab, generator=gen) * 4).round() / 2
    params = [(1.0, 1 + i % 13, 1.0 if i % 2 else 0.6, 0.0) for i in range(rows)]
    seeds, steps = torch.arange(rows) * 31, torch.arange(rows)
    tokens, logprobs, _ = ops.sample(logits, *_args(params, seeds, steps), backend="torch")
    expected = []
    for row, (t, k, p, m) in enumerate(params):
        probs = _reference_row(logits[row], t, k, p, m)
        token = int(tokens[row])
        assert probs[token] > 0
        expected.append(math.log(probs[token]))
    check("sample_logprobs", logprobs, torch.tensor(expected, dtype=torch.float64), logits=logits, tokens=tokens)


@pytest.mark.parametrize("param", [(0.7, 0, 1.0, 0.0), (1.0, 6, 0.8, 0.0), (1.2, 0, 1.0, 0.1), (0.9, 8, 0.9, 0.05)])
def test_frequencies_match_probabilities_and_masked_tokens_never_drawn(param):
    draws, vocab = 20000, 13
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(5)) * 1.5
    probs = _reference_row(logits, *param)
    # Many rows with the same logits; the randomness varies over both seeds and steps.
    index = torch.arange(draws)
    tokens, _, _ = ops.sample(
        logits.expand(draws, vocab), *_args([param] * draws, index // 50 - 200, index % 50), backend="torch"
    )
    counts = torch.bincount(tokens, minlength=vocab).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0, "drew a token the filters remove"
    expected = probs[kept] * draws
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    dof = int(kept.sum()) - 1
    # ~ 6 standard deviations above the chi-square mean: a real bias of a few percent on any token fails it.
    assert chi2 <= dof + 6 * math.sqrt(2 * dof) + 1, f"chi2 {chi2:.1f} with {dof} degrees of freedom"


def test_negative_infinity_logits_are_never_drawn():
    draws, vocab = 4000, 50
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(8))
    logits[::2] = -math.inf  # e.g. tokens blocked by min_tokens: top-k 40 covers more tokens than remain finite
    index = torch.arange(draws)
    param = (1.5, 40, 1.0, 0.0)
    tokens, logprobs, raw = ops.sample(
        logits.expand(draws, vocab), *_args([param] * draws, index, index), backend="torch"
    )
    assert bool((tokens % 2 == 1).all())
    assert bool(torch.isfinite(logprobs).all() and torch.isfinite(raw).all())


def test_a_rows_draw_depends_only_on_its_seed_and_step():
    gen = torch.Generator().manual_seed(21)
    vocab = 1031
    target_logits = torch.randn(vocab, generator=gen) * 2
    target_param, target_seed, target_step = (0.9, 30, 0.9, 0.01), -4242, 17
    alone = ops.sample(target_logits[None], *_args([target_param], [target_seed], [target_step]), backend="torch")
    for batch, position in [(2, 1), (7, 0), (33, 19), (64, 63)]:
        logits = torch.randn(batch, vocab, generator=gen) * 3
        logits[position] = target_logits
        params = [PARAM_CYCLE[i % len(PARAM_CYCLE)] for i in range(batch)]
        params[position] = target_param
        seeds = torch.randint(0, 2**40, (batch,), generator=gen)
        steps = torch.randint(0, 100, (batch,), generator=gen)
        seeds[position], steps[position] = target_seed, target_step
        out = ops.sample(logits, *_args(params, seeds, steps), backend="torch")
        for got, want in zip(out, alone, strict=True):
            assert torch.equal(got[position], want[0]), f"batch {batch}, position {position}"
    # ... while another step of the same seed draws afresh: over 40 steps a flat row gives many different tokens.
    flat = torch.zeros(40, vocab)
    tokens, _, _ = ops.sample(flat, *_args([(1.0, 0, 1.0, 0.0)] * 40, [target_seed] * 40, range(40)), backend="torch")
    assert len(set(tokens.tolist())) >= 35


def test_bad_inputs_name_the_field():
    logits = torch.randn(3, 10)
    good = list(_args([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3)))
    with pytest.raises(ValueError, match="logits must be a float"):
        ops.sample(torch.zeros(3, 10, dtype=torch.int64), *good, backend="torch")
    with pytest.raises(ValueError, match="logits must be a float"):
        ops.sample(torch.randn(30), *good, backend="torch")
    names = ["temperature", "top_k", "top_p", "min_p", "seeds", "steps"]
    for i, name in enumerate(names):
        wrong_shape = list(good)
        wrong_shape[i] = good[i][:2]
        with pytest.raises(ValueError, match=rf"{name} must be \[B\] = \[3\]"):
            ops.sample(logits, *wrong_shape, backend="torch")
        wrong_dtype = list(good)
        wrong_dtype[i] = good[i].long() if good[i].dtype.is_floating_point else good[i].float()
        with pytest.raises(ValueError, match=f"{name} must be"):
            ops.sample(logits, *wrong_dtype, backend="torch")
