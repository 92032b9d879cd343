"""The test suite's one tolerance table: every numeric comparison that is not exact takes its allowance from here.

Two kinds of entry, each with its reasoning:
- `Derived`: the compared value comes from a reduction whose order can change between machines (matmuls, attention,
  norms, log-softmax, whole models, training steps: oneDNN/MKL pick AVX-512 or AMX code paths on one CPU and AVX2 on
  another, a GPU splits its sums across threads). Its bound is computed element-wise from the computation itself
  (reduction lengths and the magnitudes summed), by the functions of tests/bounds/ on the rounding model of
  tests/error_bounds.py, so it holds on AVX2, AVX-512/AMX and GPUs alike.
- `Fixed`: no such reduction: a fixed number of roundings of values whose size the entry states (elementwise ops,
  short sums in a fixed order). atol / rtol are written in units of the format's unit roundoff u.
Exact comparisons (integer and token outputs, the same computation run twice on one machine) use torch.equal and
have no entry. `check(name, actual, expected, **inputs)` asserts one entry and returns the largest error / bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tests.bounds import attention, elementwise, norm, rl, sequences, softmax
from tests.bounds.model import output_bound
from tests.error_bounds import LAMBDA, assert_within_bound, matmul_bound, unit_roundoff

U32 = unit_roundoff(torch.float32)  # 2**-24
U16 = unit_roundoff(torch.float16)  # 2**-11
UB16 = unit_roundoff(torch.bfloat16)  # 2**-8


@dataclass(frozen=True)
class Fixed:
    atol: float
    rtol: float
    why: str

    def bound(self, expected: torch.Tensor) -> torch.Tensor:
        return self.atol + self.rtol * expected.detach().double().cpu().abs()


@dataclass(frozen=True)
class Derived:
    bound: Callable[..., torch.Tensor]  # (**inputs) -> element-wise bound, shaped like the compared value
    why: str


def _rows(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1])  # [..., V] -> [N, V]


_token_logprobs = softmax.token_logprobs_bound


def _sample_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: Any = 1.0,
                     implementations: int = 1) -> torch.Tensor:
    # Per-row temperatures (0: a greedy row, whose log-prob is exactly 0). The sampler's log-prob is over the kept
    # set; the whole row's bound covers it (fewer terms, smaller max |z|, no more prefix records: the dropped tokens
    # are all below the kept ones).
    t = torch.as_tensor(temperature, dtype=torch.float64).reshape(-1, 1).expand(logits.shape[0], 1)
    z = logits.detach().double().cpu() / torch.where(t > 0, t, 1.0)
    return _token_logprobs(z, tokens.cpu(), 1.0, implementations)


def _token_logprobs_grad(logits: torch.Tensor, targets: torch.Tensor, upstream: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    rows = softmax.softmax_rows(_rows(logits), temperature)
    flat = upstream.reshape(-1) if upstream.numel() > 1 else upstream.reshape(1).expand(targets.numel())
    return softmax.logprob_grad_bound(rows, targets.reshape(-1), flat, temperature, logits.dtype)[1].view(
        logits.shape)


def _entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return softmax.entropy_bound(softmax.softmax_rows(_rows(logits), temperature))[1].view(logits.shape[:-1])


def _linear_rows(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> softmax.SoftmaxRows:
    # logits = hidden @ weight.T accumulated in fp32 over H (bf16/fp16 inputs upcast exactly): matmul_bound.
    h64, w64 = hidden.detach().double().cpu(), weight.detach().double().cpu()
    logits = h64 @ w64.T  # [N, V]
    return softmax.softmax_rows(logits, temperature, matmul_bound(h64, w64.T, logits))


def _linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    return softmax.logprob_bound(_linear_rows(hidden, weight, temperature), targets)[1]


def _linear_entropy(hidden: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return softmax.entropy_bound(_linear_rows(hidden, weight, temperature))[1]


def _paged_attention(**inputs: Any) -> torch.Tensor:
    return attention.paged_attention_with_bound(**inputs)[1]


def _attention(**inputs: Any) -> torch.Tensor:
    return attention.attention_with_bound(**inputs)[1]


def _attention_grad(which: int) -> Callable[..., torch.Tensor]:
    return lambda **inputs: attention.attention_grad_bounds(**inputs)[which]


def _rms_norm_grad(which: int) -> Callable[..., torch.Tensor]:
    return lambda **inputs: norm.rms_norm_grad_bounds(**inputs)[which]


def _silu_and_mul_grad(which: int) -> Callable[..., torch.Tensor]:
    return lambda **inputs: elementwise.silu_and_mul_grad_bounds(**inputs)[which]


def _model_outputs(**inputs: Any) -> torch.Tensor:
    return output_bound(**inputs)[1]


def _lora_roundtrip(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float
                    ) -> torch.Tensor:
    w, a, b = (t.detach().double().cpu() for t in (weight, lora_a, lora_b))
    delta = scale * b @ a
    return 2 * U32 * (w.abs() + delta.abs()) + 2 * (LAMBDA * math.sqrt(a.shape[0]) + 2) * U32 * scale * (b.abs() @
                                                                                                     a.abs())


def _sum_of(terms: torch.Tensor, dim: int = -1) -> torch.Tensor:
    # A sum of K terms in fp32, any order: LAMBDA sqrt(K) u sum |t| plus its rounding.
    t = terms.detach().double().cpu()
    return (LAMBDA * math.sqrt(t.shape[dim]) + 1) * U32 * t.abs().sum(dim)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    # y = x W^T + b accumulated in fp32 (bf16 inputs upcast exactly), the bias one more fp32 term, one rounding into
    # x's dtype: matmul_bound over the K products and the bias.
    x64, w64 = x.detach().double().cpu(), weight.detach().double().cpu()
    ones = torch.ones(*x64.shape[:-1], 1, dtype=torch.float64)
    b64 = torch.zeros(w64.shape[0], dtype=torch.float64) if bias is None else bias.detach().double().cpu()
    a, b = torch.cat([x64, ones], -1), torch.cat([w64, b64[:, None]], -1).T  # [M, K+1], [K+1, N]
    return matmul_bound(a, b, a @ b, output=x.dtype)


TOLERANCES: dict[str, Fixed | Derived] = {
    # ---- derived from the computation (tests/bounds/)
    "token_logprobs": Derived(_token_logprobs, "log_softmax(x / T)[target] in fp32: the sum of V exponentials "
                              "(LAMBDA sqrt(V) u), each term's exponent error, the online rescales, log and the "
                              "subtraction (tests/bounds/softmax.py); implementations=2 for two fp32 computations"),
    "sample_logprobs": Derived(_sample_logprobs, "the sampler's log-prob of the drawn token over the kept set, at "
                               "each row's temperature: token_logprobs' bound for the whole row, which is larger"),
    "token_logprobs_grad": Derived(_token_logprobs_grad, "g (onehot - p) / T with p = exp(z - lse) carrying the "
                                   "exponent's and lse's errors, then one rounding into the logits' dtype"),
    "entropy": Derived(_entropy, "H = log s - E_p[m - z]: the normalizer's relative error on both terms plus "
                       "the exponents' (tests/bounds/softmax.py)"),
    "linear_logprobs": Derived(_linear_logprobs, "log-probs of logits = hidden @ weight.T / T: the logits' own "
                               "matmul error (LAMBDA sqrt(H) u sum |h||w|) through lse and the target, then the "
                               "log-softmax's"),
    "linear_entropy": Derived(_linear_entropy, "entropy of computed logits: 2 H times their largest error, plus "
                              "the log-softmax's"),
    "paged_attention": Derived(_paged_attention, "per query and head: the scores' dot products (LAMBDA sqrt(D) u), "
                               "the softmax's normalizer, the weighted sum of n values (LAMBDA sqrt(n) u), half "
                               "roundings of q and the weights for half dots, one rounding into the output "
                               "(tests/bounds/attention.py)"),
    "attention": Derived(_attention, "dense-mask attention, as paged_attention"),
    "attention_grad_q": Derived(_attention_grad(0), "dQ = scale dS K over the visible keys, dS = P (dP - rowsum(dO "
                                "O)): each product LAMBDA sqrt(K) u times its terms plus the operands' errors"),
    "attention_grad_k": Derived(_attention_grad(1), "dK = scale dS^T Q, summed over the query heads of a kv head"),
    "attention_grad_v": Derived(_attention_grad(2), "dV = P^T dO, summed over the query heads of a kv head"),
    "rms_norm": Derived(norm.rms_norm_bound, "mean of H squares (LAMBDA sqrt(H) u), rsqrt, the product, the "
                        "rounding into x's dtype before the weight and into the output (tests/bounds/norm.py)"),
    "rms_norm_grad_x": Derived(_rms_norm_grad(0), "r (g_n - n mean(g_n n)): the H-term mean and r's error"),
    "rms_norm_grad_w": Derived(_rms_norm_grad(1), "sum over the N rows of gy cast_x(n) (LAMBDA sqrt(N) u), the "
                               "half rounding of n the fp64 reference does not do, one rounding into w's dtype"),
    "silu_and_mul": Derived(elementwise.silu_and_mul_bound, "a product of factors with a few u each (exp, the "
                            "sigmoid's sum and division, two products), two half roundings for a half reference "
                            "(tests/bounds/elementwise.py)"),
    "silu_and_mul_grad_gate": Derived(_silu_and_mul_grad(0), "d u sig (1 + g (1 - sig)), which cancels near g = "
                                      "-1.28: relative to its terms' magnitudes"),
    "silu_and_mul_grad_up": Derived(_silu_and_mul_grad(1), "d silu(g): a product, as silu_and_mul"),
    "apply_rotary": Derived(elementwise.rotary_bound, "two-term sums x_a c +- x_b s: a few roundings of the terms' "
                            "magnitudes, four half roundings for a half reference (tests/bounds/elementwise.py); "
                            "transpose=True for the gradients"),
    "model_outputs": Derived(_model_outputs, "a whole model's outputs: every Linear's, norm's and attention core's "
                             "fp32 rounding injected as noise of its size into an fp64 copy, LAMBDA sqrt(2) times "
                             "the outputs' spread for two implementations (tests/bounds/model.py)"),
    "lora_roundtrip": Derived(_lora_roundtrip, "W += s B A then W -= s B A in fp32: each add rounds once (u of |W| + "
                              "|s B A|), and s B A, a sum of r products, is recomputed each time (LAMBDA sqrt(r) u of "
                              "s |B| |A|)"),
    "sequence_logprobs": Derived(sequences.sequence_logprobs_bound, "log-probs of completion tokens from two fp32 "
                                 "forwards (an engine step over a paged cache, a packed trainer forward): the "
                                 "whole-model bound of the log-probs plus each path's final log-softmax"),
    "self_certainty": Derived(sequences.self_certainty_bound, "mean over a completion's predicting rows of "
                              "KL(uniform || p) = lse(z) - mean(z) - log V in fp32 against the fp64 definition: the "
                              "model's rounding through it, each row's lse and mean over V, the mean over rows"),
    "self_certainty_of_logits": Derived(sequences.self_certainty_rows_bound, "lse(z) - mean(z) - log V of "
                                        "given fp32 logits: the lse's bound, the mean over V, three roundings"),
    "bf16_model_kl": Derived(lambda logit_bound: 0.5 * logit_bound.double().amax(-1).square(),
                             "KL(p || q) per position when q's logits move by delta, |delta_v| <= B_v (the logits' "
                             "bound of a bf16-stored model, model_outputs with storage=bf16): lse(z + delta) - lse(z) "
                             "- E_p[delta] is half a variance of delta under some softmax on the way, at most "
                             "max_v B_v^2 / 2"),
    "vector_norm": Derived(lambda tensors: (LAMBDA * math.sqrt(sum(t.numel() for t in tensors)) / 2 + 3) * U32
                           * torch.cat([t.detach().double().reshape(-1) for t in tensors]).norm(),
                           "the 2-norm of K fp32 values, any order: the sum of squares' LAMBDA sqrt(K) u (all "
                           "terms positive: relative), halved by the square root, plus the squares, the root and one "
                           "unscaling"),
    "linear": Derived(_linear, "x W^T + b: K products and the bias summed in fp32 in any order (LAMBDA sqrt(K+1) u "
                      "of |x| |W|^T + |b|), rounded once into x's dtype"),
    "sum": Derived(_sum_of, "a sum of K fp32 terms in any order: LAMBDA sqrt(K) u sum |t|"),
    "regrouped_update": Derived(
        lambda parts, tokens, weights: (LAMBDA * math.sqrt(tokens) + len(parts)) * U32
        * sum(p.detach().double().abs().max() for p in parts)
        + (len(parts) + 1) * U32 * weights.detach().double().abs(),
        "the parameter change of one SGD step (lr 1) computed from differently grouped batches: each is a sum over "
        "the batch's K tokens of per-token gradients in fp32, so two groupings differ by LAMBDA sqrt(K) u of the "
        "summed magnitudes (bounded by each part's largest change), plus one rounding per part added, plus the "
        "rounding of each updated weight (u of |w|: the change is read as after - before)"),
    # ---- fixed: no reduction whose order differs between machines
    "rotary_cos_sin": Fixed(16 * U32, 0.0, "cos/sin of the same fp32 angles as transformers computes them: two "
                            "libm/SLEEF evaluations of values <= 1, each within 2 ulp; 16 u leaves 4x margin"),
    "group_advantages": Derived(rl.group_advantages_bound, "the group mean (LAMBDA sqrt(k) u), the std's sum of "
                                "squares (the batch's K for mean_batch_std), the centering and the division "
                                "(tests/bounds/rl.py)"),
    "policy_loss": Derived(lambda **inputs: rl.policy_loss_bound("loss", **inputs), "per-token losses (the ratio's "
                           "exp and log-ratio, GSPO's sequence mean, products and the KL estimator's terms) summed "
                           "over B T tokens with the aggregation's scales (tests/bounds/rl.py)"),
    "policy_loss_per_token": Derived(lambda **inputs: rl.policy_loss_bound("per_token_loss", **inputs),
                                     "one token's loss: the ratio's and the products' roundings of its terms"),
    "policy_loss_metric": Derived(lambda metric, **inputs: rl.policy_loss_bound(metric, **inputs), "ratio mean / max, "
                                  "KL mean (sums over the tokens), clip fraction (a count over the mask weight)"),
    "policy_loss_grad": Derived(lambda **inputs: rl.policy_loss_bound("grad", **inputs), "d loss / d logprobs: the "
                                "same terms' magnitudes times their relative errors, plus the fp64 central "
                                "differences' rounding eps_64 |loss| / step"),
    "dequantize": Derived(lambda values: 8 * U32 * (values.double().abs() + values.double().abs().max()),
                          "a GGUF tensor dequantized by two implementations: fp16 scales (exact in fp32) times small "
                          "integers, a sub-block scale and the K-quants' minimum, at most 4 fp32 roundings of terms no "
                          "larger than the tensor's largest magnitude (a minimum can cancel a value to near 0)"),
    "rotary_inv_freq": Fixed(0.0, 16 * U32, "theta^(-2i/D) and the llama3 scaling's few products and divisions, "
                             "from the same fp32 formula as transformers' (pow within 2 ulp)"),
    "fp64_recomputation": Fixed(2**20 * unit_roundoff(torch.float64), 2**20 * unit_roundoff(torch.float64),
                                "the same math in fp64 along another path (another kernel, another summation order): "
                                "reductions of <= 10^4 terms of order 1 stay within LAMBDA sqrt(K) u64 ~ 10^3 u64; "
                                "2^20 u64 (1e-10) leaves margin and still fails any fp32 rounding"),
    "data_parallel_weights": Fixed(2**-16, 2**-17, "tiny fp32 model weights after 3 TAO steps on 2 ranks (DDP or "
                                   "FSDP2) against 1 process on the same batch: the gradients are the same sums in "
                                   "another order, relative error <= LAMBDA sqrt(K) u ~ 5e-5 for K <= 10^4 terms; "
                                   "AdamW's update lr m / (sqrt(v) + eps) moves by at most 2 lr times that per "
                                   "element and step (lr 1e-2): 3e-6 over 3 steps, 2^-16 = 1.5e-5 is 5x that; "
                                   "2^-17 relative for the weights' own roundings and the spread of the gradients' "
                                   "sizes (a whole-run fp64 propagation, as in test_train_step, would need "
                                   "generation and scoring in fp64 too)"),
    "data_parallel_metrics": Fixed(2**-20, 2**-13, "a loss, gradient norm or mean reward of 2 ranks against 1 "
                                   "process: the same sums in another order (relative LAMBDA sqrt(K) u <= 5e-5 for "
                                   "K <= 10^4), doubled by a cancellation of at most a factor 2; 2^-20 absolute for "
                                   "values near 0"),
    "one_rank_metrics": Fixed(0.0, 16 * U32, "a step's metric through a one-rank all-reduce (into a tensor and back, "
                              "a division by 1, a float32 / float64 conversion): a few roundings"),
    "sharded_logits": Fixed(2**-17, 2**-17, "logits of the tiny model through FSDP2's gathered weights against the "
                            "whole model: the same weights, matmuls over other batch shapes (another blocking): "
                            "LAMBDA sqrt(K) u ~ 1e-5 relative for the K <= 128 products of each logit of order 1"),
    "sharded_grads": Fixed(0.0, 2**-19, "gradients reduce-scattered over 2 ranks against one backward of the summed "
                           "loss, relative to the largest gradient (the comparison scales by max(1, max |g|)): a sum "
                           "of 2 partial gradients in another order, each a sum of <= 10^3 terms: LAMBDA sqrt(K) u"),
}


def tolerance(name: str) -> Fixed | Derived:
    try:
        return TOLERANCES[name]
    except KeyError:
        raise KeyError(f"tests/tolerances.py: no entry {name!r}; add one to TOLERANCES with its reasoning") from None


def bound(name: str, expected: torch.Tensor | None = None, **inputs: Any) -> torch.Tensor:
    """The entry's element-wise bound (Fixed: of `expected`; Derived: from `inputs`)."""
    entry = tolerance(name)
    return entry.bound(torch.as_tensor(expected)) if isinstance(entry, Fixed) else entry.bound(**inputs)


def check(name: str, actual: torch.Tensor, expected: torch.Tensor, **inputs: Any) -> float:
    """|actual - expected| <= the entry's bound element-wise (Derived: computed from `inputs`); returns the largest
    error / bound ratio."""
    expected = torch.as_tensor(expected)
    limit = bound(name, expected, **inputs)
    return assert_within_bound(torch.as_tensor(actual), expected.to(torch.float64),
                               limit.reshape(expected.shape).double().cpu(), name)
