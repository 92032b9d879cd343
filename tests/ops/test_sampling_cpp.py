"""The `cpp` backend of sample (csrc/cpu/sampling*.{h,cpp}) against the torch reference: the very same tokens over
many random rows and parameter mixes, log-probs within tolerance, raw log-probs against fp64 log_softmax; seeds
reproducible whatever the batch; frequencies of the filtered distribution; masked tokens never drawn; both per-ISA
kernel copies; opcheck and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import extension_status, load_extension
from tao_engine.ops.registry import BackendUnavailableError
from tao_engine.ops.sampling import sample_reference
from tests.tolerances import check

pytestmark = pytest.mark.ext

NEG_INF = float("-inf")
# (temperature, top_k, top_p, min_p): greedy, each filter alone, combined, top-k reaching past the row's pivot sample
PARAM_CYCLE = [
    (0.0, 0, 1.0, 0.0),
    (1.0, 0, 1.0, 0.0),
    (0.7, 0, 1.0, 0.0),
    (1.3, 5, 1.0, 0.0),
    (0.7, 50, 1.0, 0.0),
    (1.0, 0, 0.9, 0.0),
    (0.3, 0, 0.95, 0.0),
    (1.3, 0, 0.5, 0.0),
    (1.0, 0, 1.0, 0.05),
    (0.7, 0, 1.0, 0.2),
    (0.7, 50, 0.9, 0.0),
    (1.3, 20, 0.7, 0.01),
    (0.3, 300, 0.99, 0.0),
    (1.0, -1, 0.8, 0.02),
    (2.0, 1, 1.0, 0.0),
]


@pytest.fixture(scope="module", autouse=True)
def _extension() -> None:
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")


def _params(rows: list[tuple[float, int, float, float]], seeds, steps) -> tuple[torch.Tensor, ...]:
    t, k, p, m = zip(*rows, strict=True)
    return (
        torch.tensor(t, dtype=torch.float32),
        torch.tensor(k, dtype=torch.int64),
        torch.tensor(p, dtype=torch.float32),
        torch.tensor(m, dtype=torch.float32),
        torch.as_tensor(seeds, dtype=torch.int64),
        torch.as_tensor(steps, dtype=torch.int64),
    )


def _random_batch(rows: int, vocab: int, scale: float, seed: int, offset: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * scale
    params = [PARAM_CYCLE[(i + offset) % len(PARAM_CYCLE)] for i in range(rows)]
    seeds = torch.randint(-(2**62), 2**62, (rows,), generator=gen)
    steps = torch.randint(0, 10_000, (rows,), generator=gen)
    return logits, _params(params, seeds, steps)


def _assert_same_as_reference(logits: torch.Tensor, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    tokens, logprobs, raw = ops.sample(logits, *args, backend="cpp")
    ref_tokens, ref_logprobs, _ = sample_reference(logits, *args)
    assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32 and raw.dtype == torch.float32
    different = (tokens != ref_tokens).nonzero().flatten().tolist()
    assert not different, f"rows {different}: cpp {tokens[different].tolist()}, torch {ref_tokens[different].tolist()}"
    # Both compute in fp32 from the same fp32 (or exactly converted half) values, whatever the logits' dtype.
    check("sample_logprobs", logprobs, ref_logprobs, logits=logits, tokens=tokens, temperature=args[0],
          implementations=2)
    # raw_logprobs = log_softmax(logits)[token], at temperature 1, against fp64.
    raw_ref = torch.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    check("token_logprobs", raw, raw_ref, logits=logits, targets=tokens)
    return tokens, logprobs, raw


@pytest.mark.parametrize(
    ("rows", "vocab", "scale"),
    [(4, 1, 1.0), (30, 7, 2.0), (45, 129, 3.0), (45, 4099, 3.0), (30, 4099, 0.05), (30, 49152, 4.0), (15, 49152, 0.3)],
)
@pytest.mark.parametrize("offset", [0, 7])
def test_tokens_equal_the_reference(rows, vocab, scale, offset):
    # scale 0.05 and 0.3 give nearly flat rows: the top-p nucleus spans thousands of tokens.
    logits, args = _random_batch(rows, vocab, scale, seed=rows * 1009 + vocab + offset, offset=offset)
    tokens, logprobs, _ = _assert_same_as_reference(logits, args)
    greedy = args[0] <= 0
    assert torch.equal(tokens[greedy], logits[greedy].argmax(dim=-1))
    assert torch.equal(logprobs[greedy], torch.zeros(int(greedy.sum())))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_read_directly(dtype):
    logits, args = _random_batch(30, 4099, 3.0, seed=5)
    _assert_same_as_reference(logits.to(dtype), args)


def test_non_contiguous_logits():
    gen = torch.Generator().manual_seed(6)
    wide = torch.randn(15, 1000 + 9, generator=gen) * 3
    _, args = _random_batch(15, 1000, 3.0, seed=6)
    _assert_same_as_reference(wide[:, 4:1004], args)  # rows 1009 apart, start not vector-aligned
    _assert_same_as_reference((torch.randn(1000, 15, generator=gen) * 3).t(), args)  # strided last dim: copied


def test_ties_at_every_cutoff():
    # Logits on a coarse grid: many ties at the top-k, top-p and min-p boundaries and at the maximum.
    gen = torch.Generator().manual_seed(11)
    for vocab in (97, 4099):
        logits = (torch.randn(60, vocab, generator=gen) * 4).round() / 2
        params = [(1.0 if i % 3 else 0.5, 1 + i % 13, 0.6 if i % 2 else 1.0, 0.05 if i % 5 == 0 else 0.0)
                  for i in range(60)]  # fmt: skip
        params[:4] = [(0.0, 0, 1.0, 0.0)] * 4  # greedy rows on tied maxima: lowest id
        _assert_same_as_reference(logits, _params(params, torch.arange(60) * 31, torch.arange(60)))
    flat = torch.zeros(6, 5000)  # all tokens tied: every filter keeps the whole row
    params = [(1.0, 10, 1.0, 0.0), (1.0, 0, 0.5, 0.0), (0.7, 0, 1.0, 0.5), (0.0, 0, 1.0, 0.0), (1.0, 0, 0.9, 0.0),
              (1.0, 4999, 0.3, 0.0)]  # fmt: skip
    tokens, _, _ = _assert_same_as_reference(flat, _params(params, range(6), range(6)))
    assert tokens[3] == 0


def test_negative_infinity_logits_are_never_drawn():
    gen = torch.Generator().manual_seed(8)
    rows, vocab = 60, 2000
    logits = torch.randn(rows, vocab, generator=gen) * 2
    logits[:, ::2] = NEG_INF  # e.g. tokens blocked by min_tokens
    logits[:10, 11:] = NEG_INF  # rows with 6 finite tokens: top-k 20 reaches past them
    params = [PARAM_CYCLE[i % len(PARAM_CYCLE)] for i in range(rows)]
    params[:10] = [(1.0, 20, 1.0, 0.0)] * 5 + [(1.0, 0, 0.99, 0.0)] * 5
    tokens, logprobs, raw = _assert_same_as_reference(logits, _params(params, range(rows), range(rows)))
    assert bool((tokens % 2 == 1).all())
    assert bool(torch.isfinite(logprobs).all() and torch.isfinite(raw).all())


def test_a_rows_draw_depends_only_on_its_seed_and_step():
    gen = torch.Generator().manual_seed(21)
    vocab = 4099
    target_logits = torch.randn(vocab, generator=gen) * 3
    target_param, target_seed, target_step = (0.9, 0, 0.9, 0.01), -4242, 17
    alone = ops.sample(target_logits[None], *_params([target_param], [target_seed], [target_step]), backend="cpp")
    for batch, position in [(2, 1), (7, 0), (33, 19), (64, 63)]:
        logits, args = _random_batch(batch, vocab, 3.0, seed=batch)
        logits[position] = target_logits
        t, k, p, m, seeds, steps = (a.clone() for a in args)
        t[position], k[position], p[position], m[position] = target_param
        seeds[position], steps[position] = target_seed, target_step
        out = ops.sample(logits, t, k, p, m, seeds, steps, backend="cpp")
        for got, want in zip(out, alone, strict=True):
            assert torch.equal(got[position], want[0]), f"batch {batch}, position {position}"
    # ... while another step of the same seed draws afresh: over 40 steps a flat row gives many different tokens.
    flat = torch.zeros(40, vocab)
    tokens, _, _ = ops.sample(flat, *_params([(1.0, 0, 1.0, 0.0)] * 40, [target_seed] * 40, range(40)), backend="cpp")
    assert len(set(tokens.tolist())) >= 35


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


@pytest.mark.parametrize("param", [(0.7, 0, 1.0, 0.0), (1.0, 6, 0.8, 0.0), (1.2, 0, 1.0, 0.1), (0.9, 8, 0.9, 0.05)])
def test_frequencies_match_probabilities_and_masked_tokens_never_drawn(param):
    draws, vocab = 20000, 13
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(5)) * 1.5
    probs = _filtered_probs(logits, *param)
    index = torch.arange(draws)
    args = _params([param] * draws, index // 50 - 200, index % 50)  # randomness over both seeds and steps
    tokens, logprobs, _ = ops.sample(logits.expand(draws, vocab), *args, backend="cpp")
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


def test_empty_batch():
    empty = _params([(1.0, 0, 1.0, 0.0)], [0], [0])
    tokens, logprobs, raw = ops.sample(torch.randn(0, 50), *(param[:0] for param in empty), backend="cpp")
    assert tokens.shape == logprobs.shape == raw.shape == (0,)


def test_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes csrc/cpu/sampling.cpp pick the baseline-ISA copy of the kernels; the rest of
    # this file runs the AVX2 copy wherever the CPU has AVX2.
    code = textwrap.dedent(
        """
        import torch
        from tests.ops.test_sampling_cpp import _assert_same_as_reference, _random_batch
        from tao_engine.ops.extension import load_extension
        assert load_extension() is not None
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        for rows, vocab, scale in [(30, 129, 3.0), (30, 4099, 3.0), (15, 49152, 0.3)]:
            logits, args = _random_batch(rows, vocab, scale, seed=vocab)
            _assert_same_as_reference(logits, args)
            _assert_same_as_reference(logits.bfloat16(), args)
        print("ok")
        """
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_opcheck():
    load_extension()
    logits, args = _random_batch(6, 300, 3.0, seed=1)
    torch.library.opcheck(torch.ops.tao_engine.sample.default, (logits, *args))
    torch.library.opcheck(torch.ops.tao_engine.sample.default, (logits.bfloat16(), *args))


def test_automatic_resolution_picks_cpp_on_cpu():
    logits, args = _random_batch(5, 300, 3.0, seed=2)
    assert ops.sample.resolve("cpu", None, logits, *args) is ops.sample.backends["cpp"].fn
    # float64 logits are not handled by the kernel: automatic resolution falls back, an explicit request fails.
    assert ops.sample.resolve("cpu", None, logits.double(), *args) is sample_reference
    with pytest.raises(BackendUnavailableError, match="logits must be float32, bfloat16 or float16"):
        ops.sample(logits.double(), *args, backend="cpp")


def test_parameter_dtypes_are_converted():
    # The reference takes any float / integer parameter dtype; the backend converts to the kernel's fp32 / int64.
    logits, (t, k, p, m, seeds, steps) = _random_batch(9, 300, 3.0, seed=3)
    want = ops.sample(logits, t, k, p, m, seeds, steps, backend="cpp")
    got = ops.sample(logits, t.double(), k.int(), p.double(), m.double(), seeds, steps.int(), backend="cpp")
    for got_out, want_out in zip(got, want, strict=True):
        assert torch.equal(got_out, want_out)


def test_bad_inputs_name_the_field():
    logits = torch.randn(3, 10)
    good = list(_params([(1.0, 0, 1.0, 0.0)] * 3, range(3), range(3)))
    with pytest.raises(ValueError, match="logits must be a float"):
        ops.sample(torch.randn(30), *good, backend="cpp")
    names = ["temperature", "top_k", "top_p", "min_p", "seeds", "steps"]
    for i, name in enumerate(names):
        wrong_shape = list(good)
        wrong_shape[i] = good[i][:2]
        with pytest.raises(ValueError, match=rf"{name} must be \[B\] = \[3\]"):
            ops.sample(logits, *wrong_shape, backend="cpp")
        wrong_dtype = list(good)
        wrong_dtype[i] = good[i].long() if good[i].dtype.is_floating_point else good[i].float()
        with pytest.raises(ValueError, match=f"{name} must be"):
            ops.sample(logits, *wrong_dtype, backend="cpp")
    # The compiled op checks for itself when called directly: ValueError, as the reference raises.
    op = torch.ops.tao_engine.sample
    with pytest.raises(ValueError, match="logits must be a float"):
        op(torch.randn(3, 0), *good)
    with pytest.raises(ValueError, match="logits must be float32, bfloat16 or float16"):
        op(logits.double(), *good)
    with pytest.raises(ValueError, match=r"top_p must be Float"):
        op(logits, good[0], good[1], good[2].double(), *good[3:])
    with pytest.raises(ValueError, match=r"seeds must be \[B\] = \[3\]"):
        op(logits, *good[:4], good[4][:1], good[5])
