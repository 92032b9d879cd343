"""`run_flywheel`: poll the inference table; whenever `every` new unused prompts have arrived, train a round on them
(round_from_table) and ask the server to reload the round's model, so later rows record the new model version.

One flywheel per output directory: two loops writing the same rounds.json would race for round ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tao_engine.config_checks import check_positive_ints
from tao_engine.flywheel.manifest import RoundRecord
from tao_engine.flywheel.reload_client import request_reload
from tao_engine.flywheel.rounds import round_from_table
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.serve.inference_table import InferenceTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlywheelConfig:
    table: str  # the SQLite inference table `serve --table` writes
    every: int = 64  # run a round once this many unused prompts (distinct hashes) are in the table
    poll_s: float = 30.0  # seconds between looks at the table
    max_rounds: int | None = None  # stop after this many rounds (None = until stopped)
    max_prompts: int | None = None  # prompts one round takes at most (None = every unused one)
    reload_url: str | None = None  # e.g. http://127.0.0.1:8000; None = train only, reload nothing
    api_key: str | None = None  # the server's API key, when it has one
    reload_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not isinstance(self.table, str) or not self.table:
            raise ValueError("FlywheelConfig.table must be the path of the inference table (serve --table)")
        limits = [n for n in ("max_rounds", "max_prompts") if getattr(self, n) is not None]  # None: no limit
        check_positive_ints(self, ("every", *limits))
        if self.max_prompts is not None and self.max_prompts < self.every:
            raise ValueError(f"FlywheelConfig.max_prompts={self.max_prompts} is below every={self.every}: a round "
                             "would never take the prompts that triggered it; raise max_prompts")
        for name in ("poll_s", "reload_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"FlywheelConfig.{name} must be a number > 0, got {value!r}")
        if self.reload_url is not None and not self.reload_url.startswith(("http://", "https://")):
            raise ValueError(f"FlywheelConfig.reload_url must start with http:// or https://, got {self.reload_url!r}")


def count_unused(table_path: str | Path) -> int:
    """Unused prompts in the table; 0 while the server has not created it yet."""
    if not Path(table_path).is_file():
        return 0
    with InferenceTable(table_path) as table:
        return table.count_unused_prompts()


def run_flywheel(
    tao_config: TAOConfig,
    config: FlywheelConfig,
    scorer: Any = None,
    on_round: Callable[[RoundRecord, int | None], None] | None = None,
    stop: threading.Event | None = None,
) -> list[RoundRecord]:
    """Loop until `config.max_rounds` rounds ran or `stop` is set; returns the rounds run. `on_round(record,
    model_version)` is called after each round (model_version None when nothing was reloaded). A failed round or
    reload raises: the failed round's prompts stay unused, a finished round stays recorded."""
    stop = stop if stop is not None else threading.Event()
    done: list[RoundRecord] = []
    while config.max_rounds is None or len(done) < config.max_rounds:
        if stop.is_set():
            break
        waiting = count_unused(config.table)
        if waiting < config.every:
            logger.debug("flywheel: %d/%d unused prompts, waiting %.1fs", waiting, config.every, config.poll_s)
            stop.wait(config.poll_s)
            continue
        started = time.perf_counter()
        record = round_from_table(config.table, tao_config, min_prompts=config.every, max_prompts=config.max_prompts,
                                  scorer=scorer)
        version = None
        if config.reload_url is not None:
            version = request_reload(config.reload_url, record.model_dir, config.api_key, config.reload_timeout_s)
        logger.info("flywheel: %s trained on %d prompts in %.1fs -> %s (model version %s)", record.round_id,
                    record.num_prompts, time.perf_counter() - started, record.model_dir, version)
        done.append(record)
        if on_round is not None:
            on_round(record, version)
    return done
