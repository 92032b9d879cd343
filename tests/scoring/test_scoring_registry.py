"""Registry: built-in names, `module:attr` user scorers (class, function, object), unknown keys, TOML files."""

from __future__ import annotations

import textwrap

import pytest

from tao_engine.scoring.composite import CompositeScorer
from tao_engine.scoring.registry import (
    BUILTIN_SCORERS,
    build_composite,
    build_entry,
    build_scorer,
    import_object,
    load_scorers_toml,
)
from tao_engine.scoring.rules import LengthScorer

USER_MODULE = '''
class Prefix:
    name = "prefix"

    def __init__(self, prefix, bonus=1.0):
        self.prefix, self.bonus = prefix, bonus

    def score(self, prompts, completions, **context):
        return [self.bonus if c.startswith(self.prefix) else 0.0 for c in completions]


def contains(prompts, completions, needle="ok", expected=None):
    return [float(needle in c) + (0.5 if expected is not None and e == c else 0.0)
            for c, e in zip(completions, expected or [None] * len(completions))]


class NotAScorer:
    pass


READY = Prefix("z")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "tao_test_user_scorers.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tao_test_user_scorers"


def test_every_builtin_imports():
    for name, path in BUILTIN_SCORERS.items():
        obj = import_object(path)
        assert callable(obj), name


def test_builtin_with_params_and_weight():
    scorer, weight = build_scorer({"name": "length", "max_length": 3, "weight": 0.25})
    assert isinstance(scorer, LengthScorer) and weight == 0.25
    assert scorer.score(["p", "p"], ["abc", "abcd"]) == [1.0, 0.0]


def test_unknown_param_names_the_key_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'length'.*unknown key\(s\) \['max_len'\].*max_length"):
        build_scorer({"name": "length", "max_len": 3})


def test_missing_required_param():
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['pattern'\]"):
        build_scorer({"name": "regex"})


def test_invalid_param_value_names_the_scorer():
    with pytest.raises(ValueError, match="length: unit"):
        build_scorer({"name": "length", "max_length": 3, "unit": "tokens"})


def test_unknown_name_lists_builtins():
    with pytest.raises(ValueError, match=r"unknown scorer 'lenght'.*'length'"):
        build_scorer({"name": "lenght"})
    with pytest.raises(ValueError, match="no 'name'"):
        build_scorer({"weight": 1.0})


def test_bad_import_paths():
    with pytest.raises(ValueError, match="cannot import module"):
        build_scorer({"name": "no_such_module_xyz:thing"})
    with pytest.raises(ValueError, match="has no attribute"):
        build_scorer({"name": "math:no_such_attr"})


def test_user_class_function_and_object(user_module):
    cls, w = build_scorer({"name": f"{user_module}:Prefix", "prefix": "a", "bonus": 2.0, "weight": 3})
    assert cls.score([], ["ab", "b"]) == [2.0, 0.0] and w == 3
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bonsu'\]"):
        build_scorer({"name": f"{user_module}:Prefix", "prefix": "a", "bonsu": 2.0})
    fn = build_entry({"name": f"{user_module}:contains", "needle": "yes", "label": "has_yes"})
    assert fn.name == "has_yes"
    # context keys the function does not take (db_path) are left out; those it takes are passed
    assert fn.scorer.score(["p", "p"], ["yes", "no"], expected=["yes", "x"], db_path=["a", "b"]) == [1.5, 0.0]
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['needel'\]"):
        build_scorer({"name": f"{user_module}:contains", "needel": "x"})
    obj, _ = build_scorer({"name": f"{user_module}:READY"})
    assert obj.score([], ["z1"]) == [1.0]
    with pytest.raises(ValueError, match="takes no params"):
        build_scorer({"name": f"{user_module}:READY", "prefix": "q"})
    with pytest.raises(TypeError, match="not a scorer"):
        build_scorer({"name": f"{user_module}:NotAScorer"})


def test_build_composite_and_toml(tmp_path, user_module):
    comp = build_composite([{"name": "length", "max_length": 2, "weight": 2.0},
                            {"name": f"{user_module}:Prefix", "prefix": "a", "label": "starts_a"}],
                           combine="weighted_sum", on_error="none")
    assert isinstance(comp, CompositeScorer)
    assert comp.score_groups(["p"], [["ab", "abc", "b"]]).scores == [[3.0, 1.0, 2.0]]
    toml = tmp_path / "scorers.toml"
    toml.write_text(textwrap.dedent(f"""
        combine = "normalize_then_sum"
        on_error = "none"

        [[scorers]]
        name = "required_strings"
        strings = ["SELECT"]
        weight = 0.5

        [[scorers]]
        name = "{user_module}:contains"
        needle = "x"
    """))
    comp = load_scorers_toml(toml)
    assert comp.combine == "normalize_then_sum" and comp.on_error == "none"
    assert [e.name for e in comp.entries] == ["required_strings", "contains"]
    assert [e.weight for e in comp.entries] == [0.5, 1.0]


def test_toml_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('combin = "weighted_sum"\n[[scorers]]\nname = "length"\nmax_length = 3\n')
    with pytest.raises(ValueError, match=r"bad.toml: .*unknown key\(s\) \['combin'\]"):
        load_scorers_toml(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text('combine = "weighted_sum"\n')
    with pytest.raises(ValueError, match=r"\[\[scorers\]\]"):
        load_scorers_toml(empty)
