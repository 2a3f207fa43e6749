"""Dataset-scale evaluation (``accelport eval``): accuracy and agreement, streamed, resumable, distributed."""

from .config import EvalConfig
from .api import EvalResult, evaluate

__all__ = ["EvalConfig", "EvalResult", "evaluate"]
