"""The `triton` backend of sample (kernels/sampling.py) against the torch reference: the very same tokens over random
rows and every mix of temperature / top-k / top-p / min-p, bf16 and fp16 logits, ties, -inf entries, k = 1, p = 1,
tiny p; log-probs within tolerance, raw log-probs against fp64 log_softmax; a row's draw independent of its batch;
frequencies against the filtered distribution. Shapes stay small: on CPU the kernel runs in triton's interpreter."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.registry import BackendUnavailableError
from tao_engine.ops.sampling import sample_reference
from tests.tolerances import check

pytestmark = pytest.mark.triton

# (temperature, top_k, top_p, min_p): every filter alone and in every combination, greedy, all off
COMBINATIONS = [
    (t, k, p, m)
    for t, k, p, m in itertools.product((0.7, 1.0, 1.3), (0, 7, 50), (1.0, 0.9, 0.5), (0.0, 0.05))
    if (t, k, p, m) != (1.0, 7, 0.5, 0.0)
] + [(0.0, 0, 1.0, 0.0), (0.0, 5, 0.9, 0.1), (2.0, 1, 1.0, 0.0), (1.0, -1, 0.8, 0.02), (0.3, 300, 0.99, 0.0)]


def _params(rows: list[tuple[float, int, float, float]], seeds, steps, device) -> tuple[torch.Tensor, ...]:
    t, k, p, m = zip(*rows, strict=True)
    return tuple(
        torch.as_tensor(v, dtype=dtype).to(device)
        for v, dtype in (
            (t, torch.float32), (k, torch.int64), (p, torch.float32), (m, torch.float32),
            (seeds, torch.int64), (steps, torch.int64),
        )
    )  # fmt: skip


def _random_batch(rows: int, vocab: int, scale: float, seed: int, device, offset: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * scale).to(device)
    params = [COMBINATIONS[(i * 7 + offset) % len(COMBINATIONS)] for i in range(rows)]
    seeds = torch.randint(-(2**62), 2**62, (rows,), generator=gen)
    steps = torch.randint(0, 10_000, (rows,), generator=gen)
    return logits, _params(params, seeds, steps, device)


def _assert_same_as_reference(logits: torch.Tensor, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    tokens, logprobs, raw = ops.sample(logits, *args, backend="triton")
    ref_tokens, ref_logprobs, _ = sample_reference(logits, *args)
    assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32 and raw.dtype == torch.float32
    assert tokens.shape == logprobs.shape == raw.shape == (logits.shape[0],)
    different = (tokens != ref_tokens).nonzero().flatten().tolist()
    assert not different, f"rows {different}: triton {tokens[different].tolist()}, torch {ref_tokens[different]}"
    check("sample_logprobs", logprobs, ref_logprobs, logits=logits, tokens=tokens, temperature=args[0],
          implementations=2)
    raw_ref = torch.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    check("token_logprobs", raw, raw_ref, logits=logits, targets=tokens)
    return tokens, logprobs, raw


@pytest.mark.parametrize(
    ("rows", "vocab", "scale", "offset"),
    [(3, 1, 1.0, 0), (9, 7, 2.0, 1), (12, 129, 3.0, 2), (13, 1000, 3.0, 3), (4, 1000, 0.05, 4), (3, 4099, 3.0, 5),
     (3, 4099, 0.3, 6)],
)  # fmt: skip
def test_tokens_equal_the_reference(triton_device, rows, vocab, scale, offset):
    # scale 0.05 and 0.3: nearly flat rows, whose top-p nucleus spans most of the vocabulary.
    logits, args = _random_batch(rows, vocab, scale, seed=rows * 1009 + vocab, device=triton_device, offset=offset)
    tokens, logprobs, _ = _assert_same_as_reference(logits, args)
    greedy = args[0] <= 0
    assert torch.equal(tokens[greedy], logits[greedy].argmax(dim=-1))
    assert torch.equal(logprobs[greedy], torch.zeros(int(greedy.sum()), device=triton_device))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(triton_device, dtype):
    # Half logits on a coarse grid tie often: the ties must be kept or dropped together, as the reference does.
    logits, args = _random_batch(8, 1000, 3.0, seed=5, device=triton_device)
    _assert_same_as_reference(logits.to(dtype), args)


def test_non_contiguous_logits(triton_device):
    wide = (torch.randn(4, 1009, generator=torch.Generator().manual_seed(6)) * 3).to(triton_device)
    _, args = _random_batch(4, 1000, 3.0, seed=6, device=triton_device)
    _assert_same_as_reference(wide[:, 4:1004], args)  # rows 1009 apart
    _assert_same_as_reference(wide[:, :1000].t().contiguous().t(), args)  # column-major: copied


def test_ties_at_every_cutoff(triton_device):
    gen = torch.Generator().manual_seed(11)
    logits = ((torch.randn(10, 301, generator=gen) * 4).round() / 2).to(triton_device)  # many tied values
    params = [(1.0 if i % 3 else 0.5, 1 + i % 13, 0.6 if i % 2 else 1.0, 0.05 if i % 5 == 0 else 0.0)
              for i in range(10)]  # fmt: skip
    params[:2] = [(0.0, 0, 1.0, 0.0)] * 2  # greedy rows on tied maxima: the lowest id
    _assert_same_as_reference(logits, _params(params, torch.arange(10) * 31, torch.arange(10), triton_device))
    flat = torch.zeros(5, 777, device=triton_device)  # every token tied: each filter keeps the whole row
    params = [(1.0, 10, 1.0, 0.0), (1.0, 0, 0.5, 0.0), (0.7, 0, 1.0, 0.5), (0.0, 0, 1.0, 0.0), (1.0, 776, 0.3, 0.0)]
    tokens, _, _ = _assert_same_as_reference(flat, _params(params, range(5), range(5), triton_device))
    assert tokens[3] == 0


def test_negative_infinity_logits_are_never_drawn(triton_device):
    gen = torch.Generator().manual_seed(8)
    rows, vocab = 8, 1000
    logits = torch.randn(rows, vocab, generator=gen) * 2
    logits[:, ::2] = -math.inf  # e.g. tokens blocked by min_tokens
    logits[:4, 11:] = -math.inf  # rows with 6 finite tokens: top-k 20 reaches past them
    params = [COMBINATIONS[i * 5 % len(COMBINATIONS)] for i in range(rows)]
    params[:4] = [(1.0, 20, 1.0, 0.0), (1.0, 20, 0.9, 0.0), (1.0, 0, 0.99, 0.0), (0.0, 0, 1.0, 0.0)]
    args = _params(params, range(rows), range(rows), triton_device)
    tokens, logprobs, raw = _assert_same_as_reference(logits.to(triton_device), args)
    assert bool((tokens % 2 == 1).all())
    assert bool(torch.isfinite(logprobs).all() and torch.isfinite(raw).all())


def test_extreme_parameters(triton_device):
    # k = 1 (argmax draw), p = 1 (off), a tiny p (only the top token(s)), p just under 1, k = V - 1, tiny T.
    gen = torch.Generator().manual_seed(9)
    vocab = 513
    logits = (torch.randn(8, vocab, generator=gen) * 3).to(triton_device)
    params = [(1.0, 1, 1.0, 0.0), (0.8, 0, 1.0, 0.0), (1.0, 0, 1e-6, 0.0), (1.0, 0, 0.9999, 0.0),
              (1.0, vocab - 1, 1.0, 0.0), (1e-3, 0, 0.9, 0.0), (1.0, 3, 1e-6, 0.9), (5.0, 0, 1.0, 1.0)]  # fmt: skip
    # seeds at the ends of int64: the kernel's uint64 hash must wrap as the reference's int64 one does
    seeds = [-(2**63), 2**63 - 1, -1, 0, 12345, -98765, 2**40, 7]
    tokens, logprobs, _ = _assert_same_as_reference(logits, _params(params, seeds, [0, 5, 2**40, 1, 2, 3, 4, 9],
                                                                     triton_device))  # fmt: skip
    top = logits.argmax(dim=-1)
    assert tokens[0] == top[0] and tokens[2] == top[2] and tokens[6] == top[6]
    assert logprobs[0] == 0 and logprobs[2] == 0


def test_a_rows_draw_depends_only_on_its_seed_and_step(triton_device):
    gen = torch.Generator().manual_seed(21)
    vocab = 1031
    target_logits = (torch.randn(vocab, generator=gen) * 3).to(triton_device)
    target_param, target_seed, target_step = (0.9, 30, 0.9, 0.01), -4242, 17
    alone = ops.sample(
        target_logits[None], *_params([target_param], [target_seed], [target_step], triton_device), backend="triton"
    )
    for batch, position in [(2, 1), (5, 0), (7, 6)]:
        logits, args = _random_batch(batch, vocab, 3.0, seed=batch, device=triton_device)
        logits[position] = target_logits
        t, k, p, m, seeds, steps = (a.clone() for a in args)
        t[position], k[position], p[position], m[position] = target_param
        seeds[position], steps[position] = target_seed, target_step
        out = ops.sample(logits, t, k, p, m, seeds, steps, backend="triton")
        for got, want in zip(out, alone, strict=True):
            assert torch.equal(got[position], want[0]), f"batch {batch}, position {position}"
    # ... while other steps of the same seed draw afresh: over 24 steps a flat row gives many different tokens.
    flat = torch.zeros(24, vocab, device=triton_device)
    args = _params([(1.0, 0, 1.0, 0.0)] * 24, [target_seed] * 24, range(24), triton_device)
    tokens, _, _ = ops.sample(flat, *args, backend="triton")
    assert len(set(tokens.tolist())) >= 20


def _filtered_probs(logits: torch.Tensor, t: float, k: int, p: float, m: float) -> torch.Tensor:
    """fp64 probabilities [V] of one row's filtered, renormalized distribution, written out plainly with a sort."""
    scaled = (logits.float() / torch.tensor(t, dtype=torch.float32)).double()
    keep = torch.ones_like(scaled, dtype=torch.bool)
    if 0 < k < scaled.shape[0]:
        keep &= scaled >= scaled.sort(descending=True).values[k - 1]
    if p < 1:
        probs = torch.softmax(scaled.masked_fill(~keep, -math.inf), dim=0)
        ordered = probs.sort(descending=True).values
        before = torch.cumsum(ordered, 0) - ordered
        keep &= probs >= ordered[int((before < p).sum()) - 1]
    if m > 0:
        probs = torch.softmax(scaled, dim=0)
        keep &= probs >= m * probs.max()
    return torch.softmax(scaled.masked_fill(~keep, -math.inf), dim=0)


# (param, draws): the interpreter takes ~50 ms a row without top-k / top-p, ~120 ms with them
@pytest.mark.parametrize(("param", "draws"), [((0.8, 0, 1.0, 0.1), 300), ((1.0, 6, 0.8, 0.0), 80)])
def test_frequencies_match_probabilities_and_masked_tokens_never_drawn(triton_device, param, draws):
    vocab = 11
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(5)) * 1.5
    probs = _filtered_probs(logits, *param)
    index = torch.arange(draws)
    args = _params([param] * draws, index // 15 - 200, index % 15, triton_device)  # over seeds and steps
    tokens, logprobs, _ = ops.sample(logits.expand(draws, vocab).to(triton_device), *args, backend="triton")
    tokens = tokens.cpu()
    counts = torch.bincount(tokens, minlength=vocab).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0, "drew a token the filters remove"
    check("sample_logprobs", logprobs, probs[tokens.cpu()].log(), logits=logits.expand(draws, vocab),
          tokens=tokens, temperature=param[0])
    expected = probs[kept] * draws
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    dof = int(kept.sum()) - 1
    # ~ 6 standard deviations above the chi-square mean: it catches gross biases only at a few hundred draws; the
    # other tests check the draw token for token against the reference, whose frequencies tests/ops checks closely.
    assert chi2 <= dof + 6 * math.sqrt(2 * dof) + 1, f"chi2 {chi2:.1f} with {dof} degrees of freedom"


def test_empty_batch_and_parameter_dtypes(triton_device):
    empty = _params([(1.0, 0, 1.0, 0.0)], [0], [0], triton_device)
    out = ops.sample(torch.randn(0, 50, device=triton_device), *(a[:0] for a in empty), backend="triton")
    assert all(o.shape == (0,) for o in out)
    # The reference takes any float / integer parameter dtype; the backend converts to the kernel's fp32 / int64.
    logits, (t, k, p, m, seeds, steps) = _random_batch(5, 300, 3.0, seed=3, device=triton_device)
    want = ops.sample(logits, t, k, p, m, seeds, steps, backend="triton")
    got = ops.sample(logits, t.double(), k.int(), p.double(), m.double(), seeds, steps.int(), backend="triton")
    for got_out, want_out in zip(got, want, strict=True):
        assert torch.equal(got_out, want_out)


def test_bad_inputs(triton_device):
    logits = torch.randn(3, 10, device=triton_device)
    good = list(_params([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3), triton_device))
    with pytest.raises(BackendUnavailableError, match="logits has dtype torch.float64"):
        ops.sample(logits.double(), *good, backend="triton")
    with pytest.raises(ValueError, match=r"top_k must be \[B\] = \[3\]"):
        ops.sample(logits, good[0], good[1][:2], *good[2:], backend="triton")
    with pytest.raises(ValueError, match="seeds must be an integer"):
        ops.sample(logits, *good[:4], good[4].float(), good[5], backend="triton")
