"""accelport: run a vision model on an accelerator with real weights, prove parity with the CPU, time it."""

from .errors import AccelportError, DeviceError, InputError, RuntimeUnavailableError, UsageError, WeightsError
from .main_job.api import RunResult, run
from .main_job.config import RunConfig

__all__ = [
    "AccelportError", "DeviceError", "InputError", "RunConfig", "RunResult", "RuntimeUnavailableError",
    "UsageError", "WeightsError", "run",
]
