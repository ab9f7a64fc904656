"""draftwise: lossless speculative decoding with a draft model."""

from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.stats import Stats

__all__ = ["GenerateConfig", "SamplingConfig", "SpecConfig", "Stats"]
__version__ = "0.1.0"
