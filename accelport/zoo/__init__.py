"""``accelport zoo``: timm models x runtimes x dtypes, one child process per cell, resumable, torchrun-ready."""

from .api import ZooResult, run_zoo
from .config import ZooConfig

__all__ = ["ZooConfig", "ZooResult", "run_zoo"]
