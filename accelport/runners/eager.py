"""PyTorch eager execution on any device and dtype."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..devices import PINNED_DEVICE_TYPES
from .base import DTYPES, Runner


class EagerRunner(Runner):
    """The model as timm builds it, moved to the device and dtype (a private copy: the caller's stays on CPU)."""

    name = "eager"
    uses_torch_threads = True

    def _prepare_impl(self) -> None:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self._module = copy.deepcopy(self.model).to(self.device, DTYPES[self.dtype],
                                                    memory_format=memory_format)  # type: ignore[call-overload]
        self._module.eval()
        self._pin = self.device.type in PINNED_DEVICE_TYPES  # torch_npu and XPU pin like CUDA

    @property
    def module(self) -> torch.nn.Module:
        """The prepared module (on the device, in the dtype): ``accelport layers`` hooks its sub-modules."""
        self._check_prepared()
        return self._module

    def _to_device_impl(self, batch: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # Asynchronous only from pinned memory (callers pin once: see host_batch); pageable copies stay blocking.
        return batch.to(self.device, DTYPES[self.dtype], non_blocking=batch.is_pinned(), memory_format=memory_format)

    def _host_batch_impl(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.pin_memory() if self._pin else batch

    @torch.inference_mode()
    def _forward_impl(self, device_input: torch.Tensor) -> torch.Tensor:
        return self._module(device_input)

    def _describe_impl(self) -> dict[str, Any]:
        return {"torch_threads": torch.get_num_threads()}

    def _close_impl(self) -> None:
        del self._module
