"""Build scorers from TOML-like specs: `{"name": "<builtin or module:attr>", "weight": 1.0, ...params}`.

- A built-in name maps to a class through `BUILTIN_SCORERS` (import paths, so nothing is imported until used).
- `module:attr` naming a class: instantiated with the params. Naming a function: wrapped as a pointwise scorer,
  called as `fn(prompts, completions, **params, **context)` (context keys it does not take are left out).
  Naming an object that already is a scorer: used as is (no params).
- Keys every spec may have besides the params: `weight`, `label` (report name), `timeout_s` (a limit on each call:
  a sync scorer then runs in a worker process, see tao_engine.scoring.scorer_process).
  Unknown params are an error that names them and lists the accepted ones.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tao_engine.scoring.base import Scores, check_scorer
from tao_engine.scoring.composite import CombineMode, CompositeScorer, OnError, WeightedScorer

BUILTIN_SCORERS: dict[str, str] = {
    "regex": "tao_engine.scoring.rules:RegexScorer",
    "tag_format": "tao_engine.scoring.rules:TagFormatScorer",
    "length": "tao_engine.scoring.rules:LengthScorer",
    "required_strings": "tao_engine.scoring.rules:RequiredStringsScorer",
    "forbidden_strings": "tao_engine.scoring.rules:ForbiddenStringsScorer",
    "json_schema": "tao_engine.scoring.rules:JsonSchemaScorer",
    "grounded": "tao_engine.scoring.grounded:GroundedScorer",
    "arithmetic": "tao_engine.scoring.arithmetic:ArithmeticScorer",
    "sql": "tao_engine.scoring.sql:SqlVerifier",
    "sql_agreement": "tao_engine.scoring.sql_agreement:SqlAgreementScorer",
    "python_exec": "tao_engine.scoring.python_exec:PythonExecScorer",
    "majority_vote": "tao_engine.scoring.majority:MajorityVoteScorer",
    "reward_model": "tao_engine.scoring.reward_model:RewardModelScorer",
    "self_certainty": "tao_engine.scoring.self_certainty:SelfCertaintyScorer",
    "judge_pointwise": "tao_engine.scoring.judges.pointwise:PointwiseJudge",
    "judge_pairwise": "tao_engine.scoring.judges.pairwise:PairwiseJudge",
    "judge_group": "tao_engine.scoring.judges.group:GroupJudge",
}

SPEC_KEYS = ("name", "weight", "label", "timeout_s")
TOML_KEYS = ("combine", "on_error", "scorers")


def import_object(path: str) -> Any:
    """`package.module:attr` (attr may be dotted) -> the object."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"scorer {path!r}: expected a built-in name {sorted(BUILTIN_SCORERS)} or 'module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - a user's module may fail to import in any way (syntax, names, ...)
        raise ValueError(f"scorer {path!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}; "
                         "check the module (and that its folder is on PYTHONPATH)") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"scorer {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _check_params(where: str, fn: Callable[..., Any], params: Mapping[str, Any], skip: int = 0) -> None:
    """Unknown or missing keyword params of `fn` (its first `skip` parameters are not params) -> ValueError."""
    sig_params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig_params):
        return
    allowed = [p.name for p in sig_params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"scorer {where!r}: unknown key(s) {unknown}; accepted keys are "
                         f"{sorted(allowed) + list(SPEC_KEYS[1:])}")
    missing = [p.name for p in sig_params if p.name in allowed and p.default is p.empty and p.name not in params]
    if missing:
        raise ValueError(f"scorer {where!r}: missing required key(s) {missing}")


class FunctionScorer:
    """A plain function `fn(prompts, completions, **params, **context) -> list[float | None]` as a pointwise scorer
    (an `async def` function works too)."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None, params: Mapping[str, Any] | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.params = dict(params or {})
        _check_params(self.name, fn, self.params, skip=2)
        sig = inspect.signature(fn).parameters.values()
        self._takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig)
        self._accepted = {p.name for p in sig}

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        ctx = {k: v for k, v in context.items() if self._takes_any or k in self._accepted}
        clash = sorted(set(ctx) & set(self.params))
        if clash:
            raise ValueError(f"scorer {self.name!r}: context key(s) {clash} clash with its params")
        return self.fn(prompts, completions, **self.params, **ctx)


def build_scorer(spec: Mapping[str, Any]) -> tuple[Any, float]:
    """spec -> (scorer, weight). Use `build_entry` to keep `label` and `timeout_s` as well."""
    entry = build_entry(spec)
    return entry.scorer, entry.weight


def build_entry(spec: Mapping[str, Any]) -> WeightedScorer:
    if not isinstance(spec, Mapping):
        raise TypeError(f"a scorer spec must be a table/dict, got {type(spec).__name__}")
    if "name" not in spec:
        raise ValueError(f"scorer spec {dict(spec)!r} has no 'name'; built-in names are {sorted(BUILTIN_SCORERS)}, "
                         f"or give 'module:attr'")
    name = spec["name"]
    params = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    if not isinstance(name, str):
        raise ValueError(f"scorer 'name' must be a string, got {name!r}")
    if name in BUILTIN_SCORERS:
        target = import_object(BUILTIN_SCORERS[name])
    elif ":" in name:
        target = import_object(name)
    else:
        raise ValueError(f"unknown scorer {name!r}; built-in names are {sorted(BUILTIN_SCORERS)}, "
                         f"or give a 'module:attr' import path")
    if inspect.isclass(target):
        _check_params(name, target, params)
        try:
            scorer = target(**params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scorer {name!r}: {exc}") from exc
    elif inspect.isfunction(target) or inspect.isbuiltin(target):
        scorer = FunctionScorer(target, name=name.rpartition(":")[2].rpartition(".")[2], params=params)
    else:
        if params:
            raise ValueError(f"scorer {name!r} is an object, not a class: it takes no params, got {sorted(params)}")
        scorer = target
    check_scorer(scorer)
    return WeightedScorer(scorer, weight=spec.get("weight", 1.0), label=spec.get("label"),
                          timeout_s=spec.get("timeout_s"))


def build_composite(specs: Sequence[Mapping[str, Any]], combine: CombineMode = "weighted_sum",
                    on_error: OnError = "raise") -> CompositeScorer:
    return CompositeScorer([build_entry(s) for s in specs], combine=combine, on_error=on_error)


def composite_from_table(table: Mapping[str, Any]) -> CompositeScorer:
    """`{"combine": ..., "on_error": ..., "scorers": [spec, ...]}` (a parsed TOML table) -> CompositeScorer."""
    unknown = sorted(set(table) - set(TOML_KEYS))
    if unknown:
        raise ValueError(f"scoring config: unknown key(s) {unknown}; valid keys are {list(TOML_KEYS)}")
    specs = table.get("scorers")
    if not isinstance(specs, list) or not specs:
        raise ValueError("scoring config: needs at least one [[scorers]] table")
    return build_composite(specs, combine=table.get("combine", "weighted_sum"),
                           on_error=table.get("on_error", "raise"))


def load_scorers_toml(path: str | Path) -> CompositeScorer:
    """Read a TOML file with optional top-level `combine` / `on_error` and one `[[scorers]]` table per scorer."""
    from tao_engine.config_dict import read_toml

    table = read_toml(path)
    try:
        return composite_from_table(table)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
