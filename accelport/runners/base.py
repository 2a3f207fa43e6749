"""The one interface for "something that runs a batch": every runtime and device goes through it.

Public methods check state and delegate to ``_*_impl`` hooks, so the timer and the parity check treat
every backend the same way (in particular, ``synchronize()`` is honest on every device).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import torch

from ..devices import synchronize

_logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Runner(ABC):
    """Runs a model on one device/runtime. Use as a context manager or call ``prepare()``/``close()``."""

    name = "base"

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: str = "fp32", channels_last: bool = False):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        self._prepared = False

    # Public API ------------------------------------------------------------------------------------------
    def prepare(self) -> Runner:
        if not self._prepared:
            self._prepare_impl()
            self._prepared = True
        return self

    def to_device(self, batch: torch.Tensor) -> Any:
        """Host ``[N, C, H, W]`` fp32 batch -> whatever ``forward`` consumes (device, dtype, layout)."""
        self._check_prepared()
        return self._to_device_impl(batch)

    def forward(self, device_input: Any) -> Any:
        """Queue the computation; may return before the device finishes (call ``synchronize``)."""
        self._check_prepared()
        return self._forward_impl(device_input)

    def synchronize(self) -> None:
        synchronize(self.device)

    def to_host(self, device_output: Any) -> torch.Tensor:
        """Device output -> CPU fp32 tensor, for comparison with the reference."""
        return self._to_host_impl(device_output)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """One batch end to end: copy in, compute, copy out as CPU fp32."""
        return self.to_host(self.forward(self.to_device(batch)))

    def describe(self) -> dict[str, Any]:
        """Settings that determine the numbers, for the summary."""
        return {"runtime": self.name, "device": str(self.device), "dtype": self.dtype,
                "channels_last": self.channels_last, **self._describe_impl()}

    def close(self) -> None:
        if self._prepared:
            self._close_impl()
            self._prepared = False

    def __enter__(self) -> Runner:
        return self.prepare()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Hooks -----------------------------------------------------------------------------------------------
    @abstractmethod
    def _prepare_impl(self) -> None: ...

    @abstractmethod
    def _to_device_impl(self, batch: torch.Tensor) -> Any: ...

    @abstractmethod
    def _forward_impl(self, device_input: Any) -> Any: ...

    def _to_host_impl(self, device_output: Any) -> torch.Tensor:
        return device_output.detach().to("cpu", torch.float32)

    def _describe_impl(self) -> dict[str, Any]:
        return {}

    def _close_impl(self) -> None:
        pass

    def _check_prepared(self) -> None:
        if not self._prepared:
            raise RuntimeError(f"{type(self).__name__}: call prepare() (or use it as a context manager) first")
