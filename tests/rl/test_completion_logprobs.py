"""completion_logprobs: the shared-prompt update (each prompt forwarded once for its n completions) against the
unshared packing (prompt + completion per sequence, as TRL does) and a padded forward + fp64 log_softmax: log-probs,
entropies and every parameter gradient equal; forward budgets that never split a group; bad input."""

from __future__ import annotations

import pytest
import torch

from tao_engine.rl import CompletionLogprobs, completion_logprobs
from tests import helpers
from tests.error_bounds import assert_within_bound
from tests.tolerances import bound

VOCAB = 101


def _groups(seed: int, prompt_lens: list[int], ns: list[int]) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Random prompts of the given lengths with n completions each, of odd lengths from 1 to 13."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, VOCAB, (p,), generator=g).tolist() for p in prompt_lens]
    comps = [
        [torch.randint(0, VOCAB, (2 * int(torch.randint(0, 7, (1,), generator=g)) + 1,), generator=g).tolist()
         for _ in range(n)]
        for n in ns
    ]
    return prompts, comps


def _reference(model, prompts, comps, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain math: every prompt + completion right-padded through forward_padded, fp64 log_softmax of logits / T.
    Returns (log-probs [B, T], entropy [B, T]), differentiable, 0 at padding."""
    seqs = [(p, c) for p, cs in zip(prompts, comps, strict=True) for c in cs]
    width = max(len(p) + len(c) for p, c in seqs)
    t = max(len(c) for _, c in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for row, (p, c) in enumerate(seqs):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        mask[row, : len(p) + len(c)] = 1
    logp_all = torch.log_softmax(model.forward_padded(ids, mask).double() / temperature, dim=-1)  # [B, W, V]
    logp = torch.zeros(len(seqs), t, dtype=torch.float64)
    ent = torch.zeros(len(seqs), t, dtype=torch.float64)
    for row, (p, c) in enumerate(seqs):
        pred = logp_all[row, len(p) - 1 : len(p) + len(c) - 1]  # [len(c), V]: the rows that predict c
        logp[row, : len(c)] = pred.gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
        ent[row, : len(c)] = -(pred.exp() * pred).sum(-1)
    return logp, ent


def _loss_weights(shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def _grads(model) -> dict[str, torch.Tensor]:
    out = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _assert_grads_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], model, loss) -> None:
    """Two fp32 gradients of the same loss(model): within the bound of the forward's and the backward's rounding
    propagated through the model (tests/bounds/model.py, grad=True)."""
    assert actual.keys() == expected.keys() and actual, "gradients must reach the same parameters"
    names = list(expected)

    def grads(m) -> torch.Tensor:
        params = dict(m.named_parameters())
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(m), [params[n] for n in names])])

    limits = bound("model_outputs", model=model, outputs=grads, grad=True).split([expected[n].numel() for n in names])
    for name, limit in zip(names, limits, strict=True):
        grad = expected[name]
        assert grad.abs().max() > 0, f"{name}: reference gradient is zero; the test would prove nothing"
        assert_within_bound(actual[name], grad.double(), limit.view_as(grad), name)


def _value_bounds(model, prompts, comps, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the log-probs and entropies [B, T] of two fp32 paths: the model's rounding (whole-model noise) plus
    the final log-softmax's own (token_logprobs and entropy entries, for each path)."""
    both = bound("model_outputs", model=model,
                 outputs=lambda m: torch.stack(_reference(m, prompts, comps, temperature)))
    with torch.no_grad():
        rows, targets = _predicting_rows(model, prompts, comps)
    logp = both[0] + 2 * bound("token_logprobs", logits=rows, targets=targets, temperature=temperature)
    ent = both[1] + 2 * bound("entropy", logits=rows, temperature=temperature)
    return logp, ent


def _predicting_rows(model, prompts, comps) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits [B, T, V] that predict each completion token (zeros past a completion) and the tokens [B, T]."""
    seqs = [(p, c) for p, cs in zip(prompts, comps, strict=True) for c in cs]
    t = max(len(c) for _, c in seqs)
    rows = torch.zeros(len(seqs), t, VOCAB, dtype=torch.float64)
    targets = torch.zeros(len(seqs), t, dtype=torch.long)
    for row, (p, c) in enumerate(seqs):
        if c:
            ids = torch.tensor([p + c])
            logits = model.forward_padded(ids).double()[0]
            rows[row, : len(c)] = logits[len(p) - 1 : len(p) + len(c) - 1]
            targets[row, : len(c)] = torch.tensor(c)
    return rows, targets


CASES = [
    # (prompt lengths, n per prompt, temperature)
    ([7], [1], 1.0),
    ([5, 11, 2], [3, 4, 1], 1.0),
    ([13, 3, 9, 1], [4, 3, 3, 4], 0.7),
]


@pytest.mark.parametrize(("prompt_lens", "ns", "temperature"), CASES)
def test_shared_equals_unshared_equals_padded_reference(prompt_lens, ns, temperature):
    model = helpers.tiny_model(seed=2)
    prompts, comps = _groups(len(prompt_lens), prompt_lens, ns)
    ref_logp, ref_ent = _reference(model, prompts, comps, temperature)
    w_logp, w_ent = _loss_weights(tuple(ref_logp.shape), seed=sum(ns))
    ((ref_logp * w_logp).sum() + (ref_ent * w_ent).sum()).backward()
    ref_grads = _grads(model)
    logp_bound, ent_bound = _value_bounds(model, prompts, comps, temperature)

    def loss(m):
        logp, ent = _reference(m, prompts, comps, temperature)
        return (logp * w_logp).sum() + (ent * w_ent).sum()

    for shared in (True, False):
        out = completion_logprobs(model, prompts, comps, temperature, shared_prompt=shared, return_entropy=True)
        assert isinstance(out, CompletionLogprobs)
        assert out.logprobs.shape == ref_logp.shape == out.mask.shape == out.entropy.shape
        assert out.logprobs.dtype == torch.float32 and out.entropy.dtype == torch.float32
        assert out.lengths.tolist() == [len(c) for cs in comps for c in cs]
        assert (out.logprobs[~out.mask] == 0).all() and (out.entropy[~out.mask] == 0).all()
        assert_within_bound(out.logprobs, ref_logp.detach(), logp_bound, "log-probs")
        assert_within_bound(out.entropy, ref_ent.detach(), ent_bound, "entropies")
        ((out.logprobs.double() * w_logp).sum() + (out.entropy.double() * w_ent).sum()).backward()
        _assert_grads_equal(_grads(model), ref_grads, model, loss)


def test_shared_prompt_forwards_each_prompt_once():
    model = helpers.tiny_model(seed=0)
    prompts, comps = _groups(1, [20, 9], [4, 3])
    tokens: list[int] = []
    handle = model.register_forward_hook(lambda mod, args, out: tokens.append(args[0].numel()))
    try:
        with torch.no_grad():
            completion_logprobs(model, prompts, comps, shared_prompt=True)
            completion_logprobs(model, prompts, comps, shared_prompt=False)
    finally:
        handle.remove()
    comp_tokens = sum(len(c) for cs in comps for c in cs)
    assert tokens == [20 + 9 + comp_tokens, 20 * 4 + 9 * 3 + comp_tokens]


@pytest.mark.parametrize("shared", [True, False])
def test_token_budget_packs_whole_groups_and_changes_nothing(shared):
    model = helpers.tiny_model(seed=3)
    prompts, comps = _groups(4, [6, 3, 10, 2, 5], [3, 1, 4, 2, 3])
    sizes = [
        len(p) * (1 if shared else len(cs)) + sum(len(c) for c in cs) for p, cs in zip(prompts, comps, strict=True)
    ]
    whole = completion_logprobs(model, prompts, comps, shared_prompt=shared)
    whole.logprobs.sum().backward()
    whole_grads = _grads(model)
    budget = max(sizes) - 1  # the largest group exceeds it and must run alone, unsplit
    seen: list[int] = []
    handle = model.register_forward_hook(lambda mod, args, out: seen.append(args[0].numel()))
    try:
        chunked = completion_logprobs(model, prompts, comps, shared_prompt=shared, max_tokens_per_forward=budget)
    finally:
        handle.remove()
    assert len(seen) > 1 and sum(seen) == sum(sizes)
    assert all(n <= budget or n == max(sizes) for n in seen)
    # every forward holds whole groups: the cumulative sizes land on group boundaries
    boundaries = {sum(sizes[:i]) for i in range(len(sizes) + 1)}
    assert all(sum(seen[:i]) in boundaries for i in range(len(seen) + 1))
    logp_bound, _ = _value_bounds(model, prompts, comps, 1.0)
    assert_within_bound(chunked.logprobs, whole.logprobs.detach().double(), logp_bound, "log-probs")
    chunked.logprobs.sum().backward()

    def loss(m):
        return _reference(m, prompts, comps, 1.0)[0].sum()

    _assert_grads_equal(_grads(model), whole_grads, model, loss)


def test_empty_completions_give_empty_mask_rows():
    model = helpers.tiny_model(seed=1)
    prompts = [[1, 2, 3], [4, 5], [6]]
    comps = [[[7, 8], []], [[], []], [[9, 10, 11]]]
    for shared in (True, False):
        out = completion_logprobs(model, prompts, comps, shared_prompt=shared)
        assert out.mask.tolist() == [[True, True, False], [False] * 3, [False] * 3, [False] * 3, [True] * 3]
        kept_prompts, kept_comps = [prompts[0], prompts[2]], [[comps[0][0]], comps[2]]
        ref, _ = _reference(model, kept_prompts, kept_comps, 1.0)
        logp_bound, _ = _value_bounds(model, kept_prompts, kept_comps, 1.0)
        assert_within_bound(out.logprobs[[0, 4]], ref.detach(), logp_bound, "log-probs")
        assert (out.logprobs[1:4] == 0).all()
    out = completion_logprobs(model, [[1]], [[[]]])
    assert out.logprobs.shape == (1, 0) and out.entropy is None


@pytest.mark.parametrize(
    ("prompts", "comps", "kwargs", "match"),
    [
        ([[1]], [[[2]], [[3]]], {}, "1 prompts but completion_ids has 2 groups"),
        ([[]], [[[2]]], {}, r"prompt_ids\[0\] is empty"),
        ([[1], [2]], [[[2]], [3, 4]], {}, r"completion_ids\[1\] must be a list of completions"),
        ([[1]], [[[2]]], {"temperature": 0.0}, "temperature must be > 0"),
        ([[1]], [[[2]]], {"max_tokens_per_forward": 0}, "max_tokens_per_forward must be >= 1"),
    ],
)
def test_bad_input_is_named(prompts, comps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        completion_logprobs(helpers.tiny_model(), prompts, comps, **kwargs)
