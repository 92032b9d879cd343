"""policy_loss: every backend (torch reference, `cpp` csrc/cpu/policy_loss.cpp, `triton` kernels/policy_loss.py)
against a plain-math fp64 implementation (values) and its central finite differences (gradients),
tests/ops/rl_plain_math.py. Every ratio level, aggregation, KL estimator, dual clip, token weights, float masks,
per-token advantages, empty sequences, strided inputs; opcheck and torch.compile of the compiled op; errors naming
the field."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import load_extension
from tao_engine.ops.policy_loss_args import LOSS_AGGS
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tests.error_bounds import assert_within_bound
from tests.ops.conftest import backends
from tests.ops.policy_loss_cases import CASES, METRICS, case_options, check_against_plain, make_inputs, run_backend
from tests.ops.rl_plain_math import plain_policy_loss
from tests.tolerances import bound, check

BACKENDS = backends("torch", "cpp", "triton")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_plain_math(backend, device, case):
    inputs, options = case_options(case)
    check_against_plain(make_inputs(5, 7, seed=case["seed"], device=device, **inputs), backend, **options)


# 1500 tokens: more than one of the Triton kernel's 1024-token chunks
@pytest.mark.parametrize(("batch", "time"), [(1, 1), (7, 33), (129, 17), (3, 1500)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_shapes(backend, device, batch, time):
    inputs = make_inputs(batch, time, seed=batch + time, weights=True, device=device)
    options = dict(kl_coef=0.1, dual_clip=3.0, clip_high=0.28)
    check_against_plain(inputs, backend, with_grad=batch * time <= 300, **options)
    check_against_plain(inputs, backend, with_grad=False, ratio_level="sequence", loss_agg="seq_mean_token_mean")


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_and_dual_clip_are_exercised(backend):
    # The random inputs must really hit both bounds and the dual clip, or the tests above prove little.
    inputs = make_inputs(9, 16, seed=3, spread=1.0)
    out = check_against_plain(inputs, backend, dual_clip=2.0)
    assert 0.2 < out.clip_fraction.item() < 0.9 and out.ratio_max.item() > 2.0
    ratio = torch.exp(inputs["logprobs"] - inputs["old_logprobs"])
    adv = inputs["advantages"][:, None].expand_as(ratio)
    capped = inputs["mask"] & (adv < 0) & (ratio * -adv > -2.0 * adv)
    assert capped.any()
    torch.testing.assert_close(out.per_token_loss[capped], (-2.0 * adv)[capped])


@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_first_step_on_policy_gradient(backend, loss_agg):
    # old == logprobs exactly: every ratio is 1, on both clip bounds' inside and on the tie of the min; the gradient
    # is the full -A m scale, with no clipping.
    inputs = make_inputs(4, 6, seed=5, ref=False)
    inputs["old_logprobs"] = inputs["logprobs"].clone()
    options = dict(loss_agg=loss_agg, max_tokens=8, clip_low=0.0, clip_high=0.0)
    out, grad = run_backend(inputs, backend, **options)
    assert out.clip_fraction.item() == 0.0 and out.ratio_mean.item() == 1.0 and out.ratio_max.item() == 1.0
    mask = inputs["mask"].double()
    tokens = mask.sum(-1)
    sequences = (tokens > 0).sum()
    scale = {
        "token_mean": 1.0 / tokens.sum().expand(4),
        "seq_mean_token_mean": 1.0 / (tokens.clamp(min=1) * sequences),
        "seq_mean_token_sum": (1.0 / sequences).expand(4),
        "seq_mean_token_sum_norm": (1.0 / (8 * sequences)).expand(4),
    }[loss_agg]
    expected = -inputs["advantages"].double()[:, None] * mask * scale[:, None]
    check("policy_loss_grad", grad, expected, **inputs, **options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_sequences_and_batches(backend, device):
    inputs = make_inputs(3, 5, seed=6, device=device)
    inputs["mask"] = torch.zeros(3, 5, dtype=torch.bool, device=device)
    for loss_agg in LOSS_AGGS:
        out, grad = run_backend(inputs, backend, loss_agg=loss_agg, max_tokens=4, kl_coef=0.1)
        assert out.loss.item() == 0.0 and (grad == 0).all() and (out.per_token_loss == 0).all()
        assert all(getattr(out, name).item() == 0.0 for name in METRICS)
    for shape in ((0, 5), (3, 0)):
        empty = {k: torch.zeros(shape, device=device) for k in ("logprobs", "old_logprobs")}
        empty["advantages"] = torch.zeros(shape[:1], device=device)
        out, grad = run_backend({**empty, "mask": torch.ones(shape, dtype=torch.bool, device=device)}, backend)
        assert out.loss.item() == 0.0 and grad.shape == shape and out.per_token_loss.shape == shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_matches_plain_math(backend, device):
    inputs = make_inputs(4, 6, seed=7, device=device)
    with torch.no_grad():
        out = ops.policy_loss(**inputs, backend=backend)
    assert not out.loss.requires_grad
    plain = torch.tensor(plain_policy_loss(**inputs, with_grad=False)["loss"], dtype=torch.float64)
    check("policy_loss", out.loss, plain, **inputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_reaches_logprobs_only_and_scales_with_upstream(backend, device):
    inputs = make_inputs(5, 7, seed=7, per_token_adv=True, weights=True, device=device)
    inputs = {k: v.nan_to_num(0.0, 0.0, 0.0) if v is not None else None for k, v in inputs.items()}
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items() if v is not None and v.dtype.is_floating_point}
    out = ops.policy_loss(**{**inputs, **leaves}, kl_coef=0.1, backend=backend)
    (3.0 * out.loss).backward()
    assert leaves["logprobs"].grad is not None
    assert all(leaf.grad is None for name, leaf in leaves.items() if name != "logprobs")
    _, grad = run_backend(inputs, backend, kl_coef=0.1)
    # Both are fp32 gradients of the same loss, scaled by 3: each within 3 times the gradient's bound of 3 x exact.
    limit = 6 * bound("policy_loss_grad", **inputs, kl_coef=0.1)
    assert_within_bound(leaves["logprobs"].grad, 3.0 * grad.double(), limit, "gradient of 3 x loss")
    with torch.no_grad():
        again = ops.policy_loss(**inputs, kl_coef=0.1, backend=backend)
    # Without a gradient the same kernel sums the same per-token losses in the same order: the same loss.
    assert again.loss.item() == out.loss.item() and not again.loss.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_field(backend, device):
    x = make_inputs(3, 4, seed=8, ref=False, device=device)
    bad = [
        (dict(kl_coef=0.1), "kl_coef = 0.1 adds a KL penalty.*ref_logprobs is None"),
        (dict(loss_agg="mean"), "loss_agg must be one of"),
        (dict(ratio_level="seq"), "ratio_level must be one of"),
        (dict(kl_type="k4"), "kl_type must be one of"),
        (dict(loss_agg="seq_mean_token_sum_norm"), "pass max_tokens"),
        (dict(dual_clip=1.0), "dual_clip must be None or a finite number > 1"),
        (dict(clip_low=-0.1), "clip_low must be a finite number >= 0"),
        (dict(old_logprobs=x["old_logprobs"][:, :3]), r"old_logprobs must have shape \[B, T\]"),
        (dict(advantages=torch.zeros(4, device=device)), r"advantages must have shape \[B\]"),
        (dict(mask=x["mask"].long()), "mask must be a bool or floating-point tensor"),
        (dict(logprobs=x["logprobs"][0]), r"logprobs must be a 2-D \[B, T\] tensor"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            ops.policy_loss(**{**x, **kwargs}, backend=backend)
    with pytest.raises(TypeError):
        ops.policy_loss(**x, clip_ratio=0.2, backend=backend)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_sum"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs(backend, device, loss_agg):
    inputs = make_inputs(6, 9, seed=9, per_token_adv=True, weights=True, float_mask=True, device=device)
    strided = {k: v.t().contiguous().t() if v is not None else None for k, v in inputs.items()}
    assert not strided["old_logprobs"].is_contiguous()
    options = dict(kl_coef=0.2, kl_type="k2", loss_agg=loss_agg)
    expected, grad = run_backend(inputs, backend, **options)
    got, strided_grad = run_backend(strided, backend, **options)
    plain = plain_policy_loss(**inputs, **options)
    check("policy_loss", got.loss, torch.tensor(plain["loss"], dtype=torch.float64), **inputs, **options)
    check("policy_loss_grad", strided_grad, plain["grad"], **inputs, **options)
    if backend != "torch":  # the kernels read the strides in place, in the same order: bit for bit the same
        assert got.loss.item() == expected.loss.item()
        assert torch.equal(strided_grad, grad)


@pytest.mark.ext
def test_resolution_and_supports():
    inputs = make_inputs(3, 4, seed=10)
    assert all_ops()["policy_loss"].describe("cpu") == "cpp"
    half = {**inputs, "logprobs": inputs["logprobs"].to(torch.bfloat16)}
    with pytest.raises(BackendUnavailableError, match="logprobs must be float32"):
        ops.policy_loss(**half, backend="cpp")
    assert torch.isfinite(ops.policy_loss(**half).loss)  # automatic resolution falls back to the reference


def _op_args(inputs: dict, compute_grad: bool = True, **o) -> tuple:
    return (
        inputs["logprobs"], inputs["old_logprobs"], inputs["advantages"], inputs["mask"], inputs["ref_logprobs"],
        inputs["token_weights"], o.get("clip_low", 0.2), o.get("clip_high", 0.28), o.get("dual_clip"),
        o.get("ratio_level", "token"), o.get("kl_type", "k3"), o.get("kl_coef", 0.0), o.get("loss_agg", "token_mean"),
        o.get("max_tokens"), compute_grad,
    )  # fmt: skip


@pytest.mark.ext
def test_opcheck():
    load_extension()
    op = torch.ops.tao_engine.policy_loss.default
    for seed, (inputs, options) in enumerate(
        [
            (dict(), dict()),
            (dict(per_token_adv=True, weights=True), dict(kl_coef=0.1, dual_clip=3.0)),
            (dict(float_mask=True), dict(ratio_level="sequence", loss_agg="seq_mean_token_mean", kl_type="k1")),
            (dict(ref=False), dict(loss_agg="seq_mean_token_sum_norm", max_tokens=9)),
        ]
    ):
        x = make_inputs(4, 6, seed=seed, **inputs)
        x = {k: v.nan_to_num(0.0, 0.0, 0.0) if v is not None else None for k, v in x.items()}
        x["logprobs"].requires_grad_()
        torch.library.opcheck(op, _op_args(x, **options))
        torch.library.opcheck(op, _op_args({**x, "logprobs": x["logprobs"].detach()}, compute_grad=False, **options))


@pytest.mark.ext
def test_compiled_op_rejects_bad_input_naming_the_field():
    load_extension()
    op = torch.ops.tao_engine.policy_loss
    x = make_inputs(3, 4, seed=12)
    bad = [
        (_op_args(x, loss_agg="sum"), "loss_agg must be one of"),
        (_op_args(x, ratio_level="seq"), "ratio_level must be 'token' or 'sequence'"),
        (_op_args(x, kl_type="k9"), "kl_type must be 'k1', 'k2' or 'k3'"),
        (_op_args(x, loss_agg="seq_mean_token_sum_norm"), "needs max_tokens > 0, got None"),
        (_op_args({**x, "ref_logprobs": None}, kl_coef=0.5), "needs ref_logprobs"),
        (_op_args(x, dual_clip=0.5), "dual_clip must be None or a finite number > 1"),
        (_op_args({**x, "advantages": torch.zeros(4)}), r"advantages must have shape \[B\] or \[B, T\] = \[3, 4\]"),
        (_op_args({**x, "old_logprobs": x["old_logprobs"].double()}), "old_logprobs must be float32"),
        (_op_args({**x, "mask": x["mask"].long()}), "mask must be bool or float32"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            op(*args)


@pytest.mark.ext
def test_torch_compile_traces_the_op_fullgraph():
    load_extension()

    def loss(logprobs, old, adv, mask):
        return torch.ops.tao_engine.policy_loss(*_op_args(
            dict(logprobs=logprobs, old_logprobs=old, advantages=adv, mask=mask, ref_logprobs=None, token_weights=None)
        ))[0]  # fmt: skip

    x = make_inputs(5, 8, seed=11, ref=False)
    args = (x["old_logprobs"].nan_to_num(0.0, 0.0, 0.0), x["advantages"], x["mask"])
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    leaf = x["logprobs"].nan_to_num(0.0).requires_grad_()
    value = compiled(leaf, *args)
    value.backward()
    eager = leaf.detach().clone().requires_grad_()
    loss(eager, *args).backward()
    # aot_eager runs the very same kernels as eager mode, on the same machine: bit for bit the same.
    assert torch.equal(value, loss(leaf.detach(), *args))
    assert torch.equal(leaf.grad, eager.grad)
