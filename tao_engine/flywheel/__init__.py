"""The data flywheel: train on what the served model was asked, serve the result, repeat.

`round_from_table` runs one TAO round on the inference table's unused prompts (`tao-engine tune --from-table`);
`run_flywheel` waits for N new prompts, runs a round and asks the server to reload (`tao-engine flywheel`)."""

from tao_engine.flywheel.loop import FlywheelConfig, run_flywheel
from tao_engine.flywheel.manifest import RoundRecord, read_rounds
from tao_engine.flywheel.rounds import NotEnoughPromptsError, round_from_table

__all__ = [
    "FlywheelConfig",
    "NotEnoughPromptsError",
    "RoundRecord",
    "read_rounds",
    "round_from_table",
    "run_flywheel",
]
