"""The generation engine: sampling parameters, sampler, scheduler, block manager, model runner and the engine loop."""

from tao_engine.engine.config import EngineConfig
from tao_engine.engine.engine import Engine
from tao_engine.engine.outputs import RequestMetrics, RequestOutput, SampleOutput
from tao_engine.engine.sampling_params import SamplingParams

__all__ = ["Engine", "EngineConfig", "RequestMetrics", "RequestOutput", "SampleOutput", "SamplingParams"]
