"""The readiness probe (probe.py): will label-free RL work on this task, before any compute is spent?"""

from tao_engine.rl.readiness.config import ProbeSection
from tao_engine.rl.readiness.probe import ProbeReport, choose_prompts, run_probe, strip_labels

__all__ = ["ProbeReport", "ProbeSection", "choose_prompts", "run_probe", "strip_labels"]
