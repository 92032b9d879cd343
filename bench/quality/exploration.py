"""Issue 11's row of the quality benchmark: TAO that spends test-time compute on exploration while tuning, and the
tuned model that answers directly. The methods `tao_reason` and `tao_mixed` are TAO (rules, n = the profile's
rules_n, the same steps) whose candidates come from `tao_engine.rl.exploration`; `tao` at n = rules_n is the plain
counterpart. Every candidate is cut by a response transform to what the inference-time prompt should answer, and the
update trains the inference-time prompt on it (to_rollouts.py documents the off-policy choice).

Per task, the reasoning template asks for the work first and the answer in the inference-time format last; the
transform keeps exactly that answer, in the format the task's format rule and its evaluation read:
  sql   - reason about tables, columns and filters, then the query; the last ```sql block, fences kept;
  math  - work step by step, then "Answer: <n>"; the last "Answer: <n>".
`mixed` splits the n candidates between plain samples and reasoning samples, within a generated-token budget per
prompt (the exploration compute knob).
"""

from __future__ import annotations

from bench.quality.profiles import Profile
from tao_engine.rl.exploration.config import ExplorationConfig, MixedEntry, TransformConfig

EXPLORATION_METHODS = {"tao_reason": "reason", "tao_mixed": "mixed"}  # method -> strategy; "tao" is plain

REASON_TEMPLATES = {
    "sql": ("{prompt}\n\nFirst say in one or two sentences which table, columns and filters the question needs. Then "
            "write the final query in a ```sql code block."),
    "math": ("{prompt}\n\nWork it out step by step, one calculation per line. Then write the final answer on the last "
             "line as: Answer: <number>"),
}
TRANSFORMS = {
    "sql": TransformConfig(kind="regex", pattern=r"```sql\n[\s\S]+?\n```"),  # the whole block: the direct format
    "math": TransformConfig(kind="regex", pattern=r"Answer:\s*-?\d+"),
}


def exploration_config(task: str, method: str, profile: Profile, n: int) -> ExplorationConfig:
    """The [exploration] section of a `tao_reason` / `tao_mixed` cell with n candidates per prompt."""
    strategy = EXPLORATION_METHODS.get(method)
    if strategy is None:
        raise ValueError(f"exploration_config: {method!r} is not an exploration method ({sorted(EXPLORATION_METHODS)})")
    reason_tokens = profile.explore_max_tokens[task]
    common = dict(reason_template=REASON_TEMPLATES[task], transform=TRANSFORMS[task], max_tokens=reason_tokens)
    if strategy == "reason":
        return ExplorationConfig(strategy="reason", **common)
    plain_n = n // 2
    entries = (MixedEntry("plain", profile.temperature, plain_n), MixedEntry("reason", profile.temperature,
                                                                               n - plain_n))
    # The budget: what the entries could spend at their caps, less a quarter, so it binds when answers run long.
    cap = plain_n * profile.max_tokens[task] + (n - plain_n) * reason_tokens
    return ExplorationConfig(strategy="mixed", mixed=entries, tokens_budget_per_prompt=max(n, cap * 3 // 4), **common)
