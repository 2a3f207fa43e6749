"""A stand-in for Ascend's ``torch_npu`` with the settings accelport touches, recording every call.

``torch_npu.npu`` is the simulated device's ``torch.npu`` module (as with the real package) plus
``set_compile_mode``, ``config.allow_internal_format``, ``conv.allow_hf32`` and ``matmul.allow_hf32``.
Defaults follow Ascend (conv HF32 on, matmul HF32 off), so a test sees what accelport changed. Each call and
assignment is appended to ``torch_npu.recorded`` and, when ``$ACCELPORT_SIMULATED_TORCH_NPU_LOG`` names a
file, to that file as a JSON line (tests read it after a CLI run in a subprocess).
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import types
from typing import Any

from ..errors import DeviceError

LOG_ENV = "ACCELPORT_SIMULATED_TORCH_NPU_LOG"
VERSION = "0.0.0+accelport.simulated"


class _Recorder:
    """Where calls and assignments go: a list in memory and, optionally, a JSON-lines file."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._append("")  # a log that cannot be written: said before any setting, naming the variable

    def __call__(self, what: str, **fields: Any) -> None:
        record = {"what": what, **fields}
        self.records.append(record)
        self._append(json.dumps(record) + "\n")

    @staticmethod
    def _append(text: str) -> None:
        path = os.environ.get(LOG_ENV)
        if not path:
            return
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise DeviceError(f"{LOG_ENV}={path!r}: cannot be written ({exc.strerror or exc})") from None


class _Settings:
    """A namespace whose attribute writes and reads are recorded (``torch_npu.npu.conv`` and friends)."""

    def __init__(self, prefix: str, recorder: _Recorder, **defaults: Any) -> None:
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_recorder", recorder)
        object.__setattr__(self, "_values", dict(defaults))

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._values:
            raise AttributeError(f"{self._prefix}.{name} is not a setting of the simulated torch_npu")
        self._values[name] = value
        self._recorder("set", name=f"{self._prefix}.{name}", value=value)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name not in values:
            raise AttributeError(name)
        self._recorder("get", name=f"{self._prefix}.{name}", value=values[name])
        return values[name]


def make_torch_npu(device_module: types.ModuleType) -> types.ModuleType:
    """The fake package, its ``npu`` attribute being ``device_module`` extended with Ascend's settings."""
    recorder = _Recorder()
    module: Any = types.ModuleType("torch_npu")  # attributes set below, as the real package has them
    module.__spec__ = importlib.machinery.ModuleSpec("torch_npu", loader=None)
    module.__version__ = VERSION
    module.recorded = recorder.records
    npu: Any = device_module
    npu.config = _Settings("npu.config", recorder, allow_internal_format=True)
    npu.conv = _Settings("npu.conv", recorder, allow_hf32=True)
    npu.matmul = _Settings("npu.matmul", recorder, allow_hf32=False)

    def set_compile_mode(jit_compile: bool = True) -> None:
        recorder("call", name="npu.set_compile_mode", kwargs={"jit_compile": jit_compile})

    npu.set_compile_mode = set_compile_mode
    module.npu = npu
    return module
