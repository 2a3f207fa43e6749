"""``accelport run`` / ``python inference.py``: one target against the CPU fp32 reference, parity and latency."""

from .api import RunResult, run
from .config import RunConfig

__all__ = ["RunConfig", "RunResult", "run"]
