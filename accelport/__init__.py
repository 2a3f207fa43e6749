"""accelport: run a vision model on an accelerator with real weights, prove parity with the CPU, time it."""

from .main_job.config import RunConfig
from .errors import AccelportError, DeviceError, InputError, RuntimeUnavailableError, UsageError, WeightsError
from .main_job.api import RunResult, run

__all__ = [
    "AccelportError", "DeviceError", "InputError", "RunConfig", "RunResult", "RuntimeUnavailableError",
    "UsageError", "WeightsError", "run",
]
