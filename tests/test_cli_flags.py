"""DataclassFlags: a subcommand's flags come from its dataclass (type, default, help) and build it back, with the
dataclass's refusals naming the flag; every subcommand's flags default to what its dataclass (or the command's own
instance of it) says."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tao_engine.cli import build_parser
from tao_engine.cli_flags import DataclassFlags
from tao_engine.engine import EngineConfig, SamplingParams


@dataclasses.dataclass(frozen=True)
class _Config:
    path: str  # where it goes
    count: int = 3  # how many
    # how fast
    rate: float | None = None
    on: bool = False  # a switch
    words: tuple[str, ...] = ()  # repeatable

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"_Config.count must be >= 1, got {self.count}")


def _parse(flags: DataclassFlags, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    flags.add_to(parser)
    return parser.parse_args(argv)


def test_flags_take_type_default_and_help_from_the_dataclass_and_build_it_back():
    flags = DataclassFlags(_Config, ("path", "count", "rate", "on", "words"), names={"on": "--switch"})
    assert flags.build(_parse(flags, ["--path", "p"])) == _Config("p")
    built = flags.build(_parse(flags, ["--path", "p", "--count", "5", "--rate", "0.5", "--switch", "--words", "a",
                                       "--words", "b"]))
    assert built == _Config("p", 5, 0.5, True, ("a", "b"))
    parser = argparse.ArgumentParser()
    flags.add_to(parser)
    text = parser.format_help()
    assert "how many (default: 3)" in text and "how fast" in text and "--switch" in text
    with pytest.raises(SystemExit):  # a field without a default is a required flag
        parser.parse_args([])


def test_an_instance_gives_the_defaults_and_a_refused_value_names_its_flag():
    flags = DataclassFlags(_Config("here", count=7), ("count",), names={"count": "--how-many"})
    assert flags.build(_parse(flags, [])) == _Config("here", count=7)
    with pytest.raises(ValueError, match=r"^--how-many: _Config.count must be >= 1"):
        flags.build(_parse(flags, ["--how-many", "0"]))
    with pytest.raises(ValueError, match="has no field"):
        DataclassFlags(_Config, ("nope",))


def _defaults_of(command: str, required: list[str]) -> list[object]:
    import importlib

    module = importlib.import_module({"generate": "tao_engine.generate_cli", "chat": "tao_engine.chat",
                                      "serve": "tao_engine.serve.command",
                                      "flywheel": "tao_engine.flywheel.command"}[command])
    args = build_parser().parse_args([command, *required])
    return [flags.build(args) for flags in vars(module).values() if isinstance(flags, DataclassFlags)]


def test_each_subcommand_builds_its_dataclasses_with_the_defaults_it_states():
    from tao_engine.flywheel.loop import FlywheelConfig
    from tao_engine.serve.config import ServeConfig

    assert _defaults_of("generate", ["--input", "i", "--output", "o"]) == [
        SamplingParams(max_tokens=128, seed=0), EngineConfig()]
    assert _defaults_of("chat", []) == [
        EngineConfig(dtype="float32", kv_cache_bytes=256 * 2**20, max_num_seqs=4),
        SamplingParams(max_tokens=128, temperature=0.0, seed=0)]
    assert _defaults_of("serve", ["--model", "m"]) == [ServeConfig(), EngineConfig()]
    assert _defaults_of("flywheel", ["--table", "t"]) == [FlywheelConfig(table="t")]


def test_the_flag_names_users_have_still_parse():
    parser = build_parser()
    args = parser.parse_args(["chat", "--max-new-tokens", "9", "--dtype", "bfloat16", "--top-p", "0.5"])
    from tao_engine.chat import ENGINE, SAMPLING

    assert SAMPLING.build(args) == SamplingParams(max_tokens=9, temperature=0.0, top_p=0.5, seed=0)
    assert ENGINE.build(args).dtype == "bfloat16"
    args = parser.parse_args(["serve", "--model", "m", "--enable-reload", "--max-num-seqs", "16", "--port", "0"])
    from tao_engine.serve.command import ENGINE as SERVE_ENGINE
    from tao_engine.serve.command import SERVE

    assert SERVE.build(args).enable_reload_endpoint and SERVE.build(args).port == 0
    assert SERVE_ENGINE.build(args) == EngineConfig(max_num_seqs=16)
    args = parser.parse_args(["generate", "--input", "i", "--output", "o", "--stop", "x", "--stop", "y",
                              "--block-size", "8"])
    from tao_engine.generate_cli import ENGINE as GENERATE_ENGINE
    from tao_engine.generate_cli import SAMPLING as GENERATE_SAMPLING

    assert GENERATE_SAMPLING.build(args).stop == ("x", "y")
    assert GENERATE_ENGINE.build(args).block_size == 8
