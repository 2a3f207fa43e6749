"""Dataset-scale evaluation (``accelport eval``): accuracy and agreement, streamed, resumable, distributed."""

from .api import EvalResult, evaluate
from .config import EvalConfig

__all__ = ["EvalConfig", "EvalResult", "evaluate"]
