"""The `sample` op: the torch reference against an independent fp64 per-row reference (kept sets, drawn tokens,
log-probs, the seed hash, greedy rows, ties); the `cpp` (csrc/cpu/sampling*.{h,cpp}) and `triton` (kernels/sampling.py)
backends against the torch reference: the very same tokens over random rows and every mix of temperature / top-k /
top-p / min-p, half logits, ties, -inf entries, extreme parameters; log-probs within tolerance, raw log-probs against
fp64 log_softmax. Every backend: frequencies against the filtered distribution, a row's draw independent of its
batch, bad input. The cpp op's per-ISA kernel copies and opcheck. Triton's shapes stay small: on CPU it runs in
triton's interpreter (~50 ms a row without top-k / top-p, ~120 ms with them)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import load_extension
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tao_engine.ops.sampling import sample_reference, sampling_uniforms
from tests.helpers import run_at_baseline_isa
from tests.ops.conftest import backends, cases
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


def _params(rows: list[tuple[float, int, float, float]], seeds, steps, device="cpu") -> tuple[torch.Tensor, ...]:
    t, k, p, m = zip(*rows, strict=True)
    return tuple(
        torch.as_tensor(v, dtype=dtype).to(device)
        for v, dtype in (
            (t, torch.float32), (k, torch.int64), (p, torch.float32), (m, torch.float32),
            (seeds, torch.int64), (steps, torch.int64),
        )
    )  # fmt: skip


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
FILTERED_CYCLE = [(t, k, p, m) for t, k, p, m in PARAM_CYCLE if t == 0 or k != 0 or p < 1] + [(1.0, 7, 1.0, 0.2)]
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
    tokens, logprobs, raw = ops.sample(logits, *_params(params, seeds, steps), backend="torch")
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
    tokens, logprobs, raw = ops.sample(logits, *_params(params, range(5), [4] * 5), backend="torch")
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
    tokens, logprobs, _ = ops.sample(logits, *_params(params, seeds, steps), backend="torch")
    expected = []
    for row, (t, k, p, m) in enumerate(params):
        probs = _reference_row(logits[row], t, k, p, m)
        token = int(tokens[row])
        assert probs[token] > 0
        expected.append(math.log(probs[token]))
    check("sample_logprobs", logprobs, torch.tensor(expected, dtype=torch.float64), logits=logits, tokens=tokens)


def test_reference_never_draws_negative_infinity_logits():
    draws, vocab = 4000, 50
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(8))
    logits[::2] = -math.inf  # e.g. tokens blocked by min_tokens: top-k 40 covers more tokens than remain finite
    index = torch.arange(draws)
    param = (1.5, 40, 1.0, 0.0)
    tokens, logprobs, raw = ops.sample(
        logits.expand(draws, vocab), *_params([param] * draws, index, index), backend="torch"
    )
    assert bool((tokens % 2 == 1).all())
    assert bool(torch.isfinite(logprobs).all() and torch.isfinite(raw).all())




# ---- the kernels (cpp, triton) against the torch reference, token for token

# (temperature, top_k, top_p, min_p): every filter alone and in every combination, greedy, top-k reaching past the
# row's pivot sample, a large min-p
MIXES = [
    (t, k, p, m)
    for t, k, p, m in itertools.product((0.7, 1.0, 1.3), (0, 7, 50), (1.0, 0.9, 0.5), (0.0, 0.05))
    if (t, k, p, m) != (1.0, 7, 0.5, 0.0)
] + [(0.0, 0, 1.0, 0.0), (0.0, 5, 0.9, 0.1), (2.0, 1, 1.0, 0.0), (1.0, -1, 0.8, 0.02), (0.3, 300, 0.99, 0.0),
     (0.7, 0, 1.0, 0.2), (1.3, 20, 0.7, 0.01), (0.3, 0, 0.95, 0.0)]  # fmt: skip
KERNELS = backends("cpp", "triton")
ROWS = {"cpp": 30, "triton": 4}  # rows of a batch for the tests that do not name their size


def _random_batch(rows: int, vocab: int, scale: float, seed: int, device="cpu", offset: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * scale).to(device)
    params = [MIXES[(i * 7 + offset) % len(MIXES)] for i in range(rows)]
    seeds = torch.randint(-(2**62), 2**62, (rows,), generator=gen)
    steps = torch.randint(0, 10_000, (rows,), generator=gen)
    return logits, _params(params, seeds, steps, device)


def _assert_same_as_reference(logits: torch.Tensor, args: tuple[torch.Tensor, ...], backend: str):
    tokens, logprobs, raw = ops.sample(logits, *args, backend=backend)
    ref_tokens, ref_logprobs, _ = sample_reference(logits, *args)
    assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32 and raw.dtype == torch.float32
    assert tokens.shape == logprobs.shape == raw.shape == (logits.shape[0],)
    different = (tokens != ref_tokens).nonzero().flatten().tolist()
    assert not different, f"rows {different}: {backend} {tokens[different].tolist()}, torch {ref_tokens[different]}"
    # Both compute in fp32 from the same fp32 (or exactly converted half) values, whatever the logits' dtype.
    check("sample_logprobs", logprobs, ref_logprobs, logits=logits, tokens=tokens, temperature=args[0],
          implementations=2)
    # raw_logprobs = log_softmax(logits)[token], at temperature 1, against fp64.
    raw_ref = torch.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    check("token_logprobs", raw, raw_ref, logits=logits, targets=tokens)
    return tokens, logprobs, raw


# scale 0.05 and 0.3 give nearly flat rows: the top-p nucleus spans thousands of tokens.
@pytest.mark.parametrize(("backend", "rows", "vocab", "scale", "offset"), [
    *cases("cpp", *((rows, vocab, scale, offset) for offset in (0, 7) for rows, vocab, scale in
                    [(4, 1, 1.0), (30, 7, 2.0), (45, 129, 3.0), (45, 4099, 3.0), (30, 4099, 0.05), (30, 49152, 4.0),
                     (15, 49152, 0.3)])),
    *cases("triton", (3, 1, 1.0, 0), (9, 7, 2.0, 1), (12, 129, 3.0, 2), (13, 1000, 3.0, 3), (4, 1000, 0.05, 4),
           (3, 4099, 3.0, 5), (3, 4099, 0.3, 6)),
])  # fmt: skip
def test_tokens_equal_the_reference(backend, device, rows, vocab, scale, offset):
    logits, args = _random_batch(rows, vocab, scale, seed=rows * 1009 + vocab + offset, device=device, offset=offset)
    tokens, logprobs, _ = _assert_same_as_reference(logits, args, backend)
    greedy = args[0] <= 0
    assert torch.equal(tokens[greedy], logits[greedy].argmax(dim=-1))
    assert torch.equal(logprobs[greedy], torch.zeros(int(greedy.sum()), device=device))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("backend", "rows", "vocab"), [*cases("cpp", (30, 4099)), *cases("triton", (8, 1000))])
def test_half_precision_logits_are_read_directly(backend, device, rows, vocab, dtype):
    # Half logits on a coarse grid tie often: the ties must be kept or dropped together, as the reference does.
    logits, args = _random_batch(rows, vocab, 3.0, seed=5, device=device)
    _assert_same_as_reference(logits.to(dtype), args, backend)


@pytest.mark.parametrize("backend", KERNELS)
def test_non_contiguous_logits(backend, device):
    gen = torch.Generator().manual_seed(6)
    rows = ROWS[backend]
    wide = (torch.randn(rows, 1000 + 9, generator=gen) * 3).to(device)
    _, args = _random_batch(rows, 1000, 3.0, seed=6, device=device)
    _assert_same_as_reference(wide[:, 4:1004], args, backend)  # rows 1009 apart, start not vector-aligned
    _assert_same_as_reference(wide[:, :1000].t().contiguous().t(), args, backend)  # column-major: copied


@pytest.mark.parametrize(("backend", "rows", "vocabs", "flat_vocab"),
                         [*cases("cpp", (60, (97, 4099), 5000)), *cases("triton", (10, (301,), 777))])
def test_ties_at_every_cutoff(backend, device, rows, vocabs, flat_vocab):
    # Logits on a coarse grid: many ties at the top-k, top-p and min-p boundaries and at the maximum.
    gen = torch.Generator().manual_seed(11)
    for vocab in vocabs:
        logits = ((torch.randn(rows, vocab, generator=gen) * 4).round() / 2).to(device)
        params = [(1.0 if i % 3 else 0.5, 1 + i % 13, 0.6 if i % 2 else 1.0, 0.05 if i % 5 == 0 else 0.0)
                  for i in range(rows)]  # fmt: skip
        params[:4] = [(0.0, 0, 1.0, 0.0)] * 4  # greedy rows on tied maxima: lowest id
        _assert_same_as_reference(logits, _params(params, torch.arange(rows) * 31, torch.arange(rows), device),
                                  backend)
    flat = torch.zeros(6, flat_vocab, device=device)  # all tokens tied: every filter keeps the whole row
    params = [(1.0, 10, 1.0, 0.0), (1.0, 0, 0.5, 0.0), (0.7, 0, 1.0, 0.5), (0.0, 0, 1.0, 0.0), (1.0, 0, 0.9, 0.0),
              (1.0, flat_vocab - 1, 0.3, 0.0)]  # fmt: skip
    tokens, _, _ = _assert_same_as_reference(flat, _params(params, range(6), range(6), device), backend)
    assert tokens[3] == 0


@pytest.mark.parametrize(("backend", "rows", "vocab"), [*cases("cpp", (60, 2000)), *cases("triton", (8, 1000))])
def test_negative_infinity_logits_are_never_drawn(backend, device, rows, vocab):
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(rows, vocab, generator=gen) * 2
    logits[:, ::2] = -math.inf  # e.g. tokens blocked by min_tokens
    special = max(4, rows // 6)
    logits[:special, 11:] = -math.inf  # rows with 6 finite tokens: top-k 20 reaches past them
    params = [MIXES[i * 5 % len(MIXES)] for i in range(rows)]
    corner = [(1.0, 20, 1.0, 0.0), (1.0, 20, 0.9, 0.0), (1.0, 0, 0.99, 0.0), (0.0, 0, 1.0, 0.0)]
    params[:special] = [corner[i % 4] for i in range(special)]
    args = _params(params, range(rows), range(rows), device)
    tokens, logprobs, raw = _assert_same_as_reference(logits.to(device), args, backend)
    assert bool((tokens % 2 == 1).all())
    assert bool(torch.isfinite(logprobs).all() and torch.isfinite(raw).all())


@pytest.mark.parametrize("backend", KERNELS)
def test_extreme_parameters(backend, device):
    # k = 1 (argmax draw), p = 1 (off), a tiny p (only the top token(s)), p just under 1, k = V - 1, tiny T.
    gen = torch.Generator().manual_seed(9)
    vocab = 513
    logits = (torch.randn(8, vocab, generator=gen) * 3).to(device)
    params = [(1.0, 1, 1.0, 0.0), (0.8, 0, 1.0, 0.0), (1.0, 0, 1e-6, 0.0), (1.0, 0, 0.9999, 0.0),
              (1.0, vocab - 1, 1.0, 0.0), (1e-3, 0, 0.9, 0.0), (1.0, 3, 1e-6, 0.9), (5.0, 0, 1.0, 1.0)]  # fmt: skip
    # seeds at the ends of int64: the kernel's uint64 hash must wrap as the reference's int64 one does
    seeds = [-(2**63), 2**63 - 1, -1, 0, 12345, -98765, 2**40, 7]
    args = _params(params, seeds, [0, 5, 2**40, 1, 2, 3, 4, 9], device)
    tokens, logprobs, _ = _assert_same_as_reference(logits, args, backend)
    top = logits.argmax(dim=-1)
    assert tokens[0] == top[0] and tokens[2] == top[2] and tokens[6] == top[6]
    assert logprobs[0] == 0 and logprobs[2] == 0


@pytest.mark.parametrize("backend", KERNELS)
def test_empty_batch_and_parameter_dtypes(backend, device):
    empty = _params([(1.0, 0, 1.0, 0.0)], [0], [0], device)
    out = ops.sample(torch.randn(0, 50, device=device), *(a[:0] for a in empty), backend=backend)
    assert all(o.shape == (0,) for o in out)
    # The reference takes any float / integer parameter dtype; the backend converts to the kernel's fp32 / int64.
    logits, (t, k, p, m, seeds, steps) = _random_batch(ROWS[backend], 300, 3.0, seed=3, device=device)
    want = ops.sample(logits, t, k, p, m, seeds, steps, backend=backend)
    got = ops.sample(logits, t.double(), k.int(), p.double(), m.double(), seeds, steps.int(), backend=backend)
    for got_out, want_out in zip(got, want, strict=True):
        assert torch.equal(got_out, want_out)


# ---- every backend

# (backend, param, draws, vocab, steps per seed): triton's interpreter affords a few hundred draws, which catch
# gross biases only; the other tests check its draws token for token against the reference.
FREQUENCY_CASES = [
    *(case for backend in ("torch", "cpp") for case in cases(backend, *(
        (param, 20000, 13, 50)
        for param in [(0.7, 0, 1.0, 0.0), (1.0, 6, 0.8, 0.0), (1.2, 0, 1.0, 0.1), (0.9, 8, 0.9, 0.05)]))),
    *cases("triton", ((0.8, 0, 1.0, 0.1), 300, 11, 15), ((1.0, 6, 0.8, 0.0), 80, 11, 15)),
]  # fmt: skip


@pytest.mark.parametrize(("backend", "param", "draws", "vocab", "per_seed"), FREQUENCY_CASES)
def test_frequencies_match_probabilities_and_masked_tokens_never_drawn(backend, device, param, draws, vocab,
                                                                         per_seed):
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(5)) * 1.5
    probs = _reference_row(logits, *param)
    index = torch.arange(draws)
    args = _params([param] * draws, index // per_seed - 200, index % per_seed, device)  # over seeds and steps
    tokens, logprobs, _ = ops.sample(logits.expand(draws, vocab).to(device), *args, backend=backend)
    tokens = tokens.cpu()
    counts = torch.bincount(tokens, minlength=vocab).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0, "drew a token the filters remove"
    check("sample_logprobs", logprobs, probs[tokens].log(), logits=logits.expand(draws, vocab), tokens=tokens,
          temperature=param[0])
    expected = probs[kept] * draws
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    dof = int(kept.sum()) - 1
    # ~ 6 standard deviations above the chi-square mean: a real bias of a few percent on any token fails it.
    assert chi2 <= dof + 6 * math.sqrt(2 * dof) + 1, f"chi2 {chi2:.1f} with {dof} degrees of freedom"


# (backend, vocab, (batch, position) pairs, flat rows, distinct tokens at least among them)
@pytest.mark.parametrize(("backend", "vocab", "placements", "flat_rows", "distinct"), [
    *cases("torch", (1031, [(2, 1), (7, 0), (33, 19), (64, 63)], 40, 35)),
    *cases("cpp", (4099, [(2, 1), (7, 0), (33, 19), (64, 63)], 40, 35)),
    *cases("triton", (1031, [(2, 1), (5, 0), (7, 6)], 24, 20)),
])  # fmt: skip
def test_a_rows_draw_depends_only_on_its_seed_and_step(backend, device, vocab, placements, flat_rows, distinct):
    gen = torch.Generator().manual_seed(21)
    target_logits = (torch.randn(vocab, generator=gen) * 3).to(device)
    target_param, target_seed, target_step = (0.9, 30, 0.9, 0.01), -4242, 17
    alone = ops.sample(target_logits[None], *_params([target_param], [target_seed], [target_step], device),
                       backend=backend)
    for batch, position in placements:
        logits, args = _random_batch(batch, vocab, 3.0, seed=batch, device=device)
        logits[position] = target_logits
        t, k, p, m, seeds, steps = (a.clone() for a in args)
        t[position], k[position], p[position], m[position] = target_param
        seeds[position], steps[position] = target_seed, target_step
        out = ops.sample(logits, t, k, p, m, seeds, steps, backend=backend)
        for got, want in zip(out, alone, strict=True):
            assert torch.equal(got[position], want[0]), f"batch {batch}, position {position}"
    # ... while other steps of the same seed draw afresh: over many steps a flat row gives many different tokens.
    flat = torch.zeros(flat_rows, vocab, device=device)
    args = _params([(1.0, 0, 1.0, 0.0)] * flat_rows, [target_seed] * flat_rows, range(flat_rows), device)
    tokens, _, _ = ops.sample(flat, *args, backend=backend)
    assert len(set(tokens.tolist())) >= distinct


@pytest.mark.parametrize("backend", backends("torch", "cpp", "triton"))
def test_bad_inputs_name_the_field(backend, device):
    logits = torch.randn(3, 10, device=device)
    good = list(_params([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3), device))
    with pytest.raises(ValueError, match="logits must be a float"):
        ops.sample(torch.randn(30, device=device), *good, backend=backend)
    names = ["temperature", "top_k", "top_p", "min_p", "seeds", "steps"]
    for i, name in enumerate(names):
        wrong_shape = list(good)
        wrong_shape[i] = good[i][:2]
        with pytest.raises(ValueError, match=rf"{name} must be \[B\] = \[3\]"):
            ops.sample(logits, *wrong_shape, backend=backend)
        wrong_dtype = list(good)
        wrong_dtype[i] = good[i].long() if good[i].dtype.is_floating_point else good[i].float()
        with pytest.raises(ValueError, match=f"{name} must be"):
            ops.sample(logits, *wrong_dtype, backend=backend)


def test_reference_refuses_integer_logits():
    good = _params([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3))
    with pytest.raises(ValueError, match="logits must be a float"):
        ops.sample(torch.zeros(3, 10, dtype=torch.int64), *good, backend="torch")


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_refuses_fp64_logits(backend, device):
    good = _params([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3), device)
    with pytest.raises(BackendUnavailableError, match="logits has dtype torch.float64"):
        ops.sample(torch.randn(3, 10, dtype=torch.float64, device=device), *good, backend=backend)


# ---- the cpp op itself


@pytest.mark.ext
def test_cpp_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes csrc/cpu/sampling.cpp pick the baseline-ISA copy of the kernels; the rest of
    # this file runs the AVX2 copy wherever the CPU has AVX2.
    code = (
        """
        import torch
        from tests.ops.test_sampling import _assert_same_as_reference, _random_batch
        from tao_engine.ops.extension import load_extension
        assert load_extension() is not None
        for rows, vocab, scale in [(30, 129, 3.0), (30, 4099, 3.0), (15, 49152, 0.3)]:
            logits, args = _random_batch(rows, vocab, scale, seed=vocab)
            _assert_same_as_reference(logits, args, "cpp")
            _assert_same_as_reference(logits.bfloat16(), args, "cpp")
        print("ok")
        """
    )
    assert run_at_baseline_isa(code).stdout.strip() == "ok"


@pytest.mark.ext
def test_cpp_opcheck():
    load_extension()
    logits, args = _random_batch(6, 300, 3.0, seed=1)
    torch.library.opcheck(torch.ops.tao_engine.sample.default, (logits, *args))
    torch.library.opcheck(torch.ops.tao_engine.sample.default, (logits.bfloat16(), *args))


@pytest.mark.ext
def test_automatic_resolution_picks_cpp_on_cpu():
    logits, args = _random_batch(5, 300, 3.0, seed=2)
    assert ops.sample.resolve("cpu", None, logits, *args) is ops.sample.backends["cpp"].fn
    # float64 logits are not handled by the kernel: automatic resolution falls back, an explicit request fails.
    assert ops.sample.resolve("cpu", None, logits.double(), *args) is sample_reference
    with pytest.raises(BackendUnavailableError, match="logits must be float32, bfloat16 or float16"):
        ops.sample(logits.double(), *args, backend="cpp")


@pytest.mark.ext
def test_compiled_op_checks_its_input():
    # The compiled op checks for itself when called directly: ValueError, as the reference raises.
    load_extension()
    logits = torch.randn(3, 10)
    good = list(_params([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3)))
    op = torch.ops.tao_engine.sample
    with pytest.raises(ValueError, match="logits must be a float"):
        op(torch.randn(3, 0), *good)
    with pytest.raises(ValueError, match="logits must be float32, bfloat16 or float16"):
        op(logits.double(), *good)
    with pytest.raises(ValueError, match=r"top_p must be Float"):
        op(logits, good[0], good[1], good[2].double(), *good[3:])
    with pytest.raises(ValueError, match=r"seeds must be \[B\] = \[3\]"):
        op(logits, *good[:4], good[4][:1], good[5])
