"""``accelport power``: what a PASS rules out, measured by injecting standard faults into a copy of the weights."""

from .api import PowerResult, run_power
from .config import PowerConfig

__all__ = ["PowerConfig", "PowerResult", "run_power"]
