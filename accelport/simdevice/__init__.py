"""A simulated accelerator for tests: ``ACCELPORT_SIMULATED_DEVICE=npu`` (see docs/simulated_device.md).

``activate()`` builds/loads the C++ PrivateUse1 backend (backend.cpp), names it, registers ``torch.<name>``,
puts a fake ``torch_npu`` in ``sys.modules`` and, for ``npu``, makes the ``hccl`` process-group backend a
gloo group, so accelport's Ascend code path runs end to end on a CPU-only machine. It is a testing aid:
kernels are torch's CPU kernels, and only the timing behaviour (an asynchronous queue) is simulated.

Settings (environment, read at activation): ``ACCELPORT_SIMULATED_DEVICE_COUNT`` (devices, default 1),
``ACCELPORT_SIMULATED_KERNEL_US`` (device time per kernel, default 20), ``ACCELPORT_SIMULATED_COPY_US_PER_MIB``
(device time per MiB copied, default 100, i.e. about 10 GB/s).
"""

from __future__ import annotations

from .backend import COPY_ENV, COUNT_ENV, KERNEL_ENV, activate, configure, is_active, kernel_launches, pending_us

__all__ = ["COUNT_ENV", "COPY_ENV", "KERNEL_ENV", "activate", "configure", "is_active", "kernel_launches",
           "pending_us"]
