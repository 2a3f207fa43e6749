"""The one interface for "something that runs a batch": every runtime and device goes through it.

Public methods check state and delegate to ``_*_impl`` hooks, so the timer and the parity check treat
every backend the same way (in particular, ``synchronize()`` is honest on every device).
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..devices import synchronize
from ..errors import RuntimeUnavailableError
from ..typed_numbers import MAX_BATCH_SIZE

_logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # torch compute dtypes
# Precisions an engine's own quantiser produces (runners/quantize.py): not a torch dtype to cast the model to; the
# value is the dtype of the input the quantised engine takes. INPUT_DTYPES: what each --dtype feeds the engine.
QUANTIZED_DTYPES = {"int8": torch.float32}
INPUT_DTYPES = {**DTYPES, **QUANTIZED_DTYPES}  # every --dtype choice, in this order


def request_count(batch_size: int, streams: int, micro_batch: int | None) -> int:
    """How many requests a batch is split into: one per stream, or ``micro_batch`` images each; never more
    requests than images. (Here, not in openvino.py, because bench plans its sweep with it without OpenVINO.)"""
    wanted = -(-batch_size // micro_batch) if micro_batch else streams
    return max(1, min(wanted, batch_size))


@contextlib.contextmanager
def torch_thread_count(threads: int | None) -> Iterator[int]:
    """torch's intra-op pool (process-wide) at ``threads`` for the duration, restored after; ``None`` or the count
    already in force changes nothing. Yields the count in force."""
    before = torch.get_num_threads()
    if not threads or threads == before:
        yield before
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class RunnerOption:
    """A keyword option only some runtimes take: its flag, the value that means "not used", and what it does.

    Callers pass every option they have (``streams=1`` to eager too); a runtime that does not take one accepts
    only its ``default`` and its ``neutral`` values (what every runtime does anyway), anything else is refused
    naming the flag and the runtimes that do (``owner``).
    """

    flag: str
    default: Any
    owner: str  # completes "only <owner> <does>"
    does: str
    value_type: Any  # what the Python API takes (a flag's value in its own type)
    minimum: int | None = None  # the smallest valid value (None: not a count)
    neutral: tuple[Any, ...] = ()  # values any runtime accepts besides the default (what it does without the flag)
    in_every_record: bool = True  # False: only its owner records it, where it applies (``describe``)

    def check(self, value: Any) -> None:
        """The value itself, whatever the runtime: a count outside [minimum, MAX_BATCH_SIZE] is refused naming the
        flag (a request of 2**63 images went through to the engine)."""
        if self.minimum is not None and value is not None and not self.minimum <= value <= MAX_BATCH_SIZE:
            raise RuntimeUnavailableError(f"{self.flag} {value}: must be between {self.minimum} and {MAX_BATCH_SIZE}")


# Every runtime-specific option a caller may pass to any runner. Which runtime takes one, and what is a valid
# value, is the runner class's business (its ``options`` and ``_check_options``); this only lets the others
# refuse it by its flag.
OPTIONS: dict[str, RunnerOption] = {
    "streams": RunnerOption("--streams", 1, "OpenVINO", "splits a batch over parallel streams", int, minimum=1),
    "micro_batch": RunnerOption("--micro-batch", None, "OpenVINO", "splits a batch into requests", int | None,
                                minimum=1),
    "calibration": RunnerOption("--calibration", (), "the int8 runtimes (onnxruntime, openvino, compile)",
                                "calibrate a quantiser", tuple[str, ...]),
    # None: not given, which is fp32; an explicit "fp32" stays in the Target, so `run --runtime auto` keeps it
    # over a bf16 pick (a value at its default is dropped from a Target's options)
    "int8_remainder": RunnerOption("--int8-remainder", None, "OpenVINO",
                                   "runs the float work between an int8 model's int8 layers in bf16", str | None,
                                   neutral=("fp32",), in_every_record=False),
}
INT8_REMAINDERS = ("fp32", "bf16")  # --int8-remainder's values


class Runner(ABC):
    """Runs a model on one device/runtime. Use as a context manager or call ``prepare()``/``close()``."""

    name = "base"
    # The names in OPTIONS this runtime takes; it checks their values in ``_check_options``.
    options: ClassVar[frozenset[str]] = frozenset()
    # Whether it computes on torch's intra-op pool, which is process-wide: then ``threads`` is set around each of
    # its calls (and restored), so runners with different counts can take turns in one sweep.
    uses_torch_threads: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: str = "fp32", channels_last: bool = False,
                 *, threads: int | None = None, cache_dir: str | Path | None = None, **options: Any):
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(INPUT_DTYPES)}")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        # Intra-op threads: every runtime gets the same count (torch's by default) so comparisons are fair.
        self.threads = int(threads) if threads else torch.get_num_threads()
        self.option_values = self._take_options(options)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # One-off costs (export, compile, session creation, first run of a shape), kept out of latency.
        self.setup_events: list[dict[str, Any]] = []
        self._ready_shapes: set[tuple[int, ...]] = set()
        self._prepared = False

    def _take_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every option of OPTIONS with its value (``given`` or the default), after this runtime checked them."""
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}")
        for name, value in given.items():
            option = OPTIONS[name]
            option.check(value)
            if name not in self.options and value != option.default and value not in option.neutral:
                raise RuntimeUnavailableError(f"{option.flag} {value} does not apply to --runtime {self.name}: only "
                                              f"{option.owner} {option.does}; drop the flag")
        values = {name: given.get(name, option.default) for name, option in OPTIONS.items()}
        return {**values, **self._check_options({name: values[name] for name in self.options})}

    def _check_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values of the options this runtime takes, checked (RuntimeUnavailableError naming the flag) and
        normalised; a runtime that takes options keeps them here."""
        return values

    # Public API ------------------------------------------------------------------------------------------
    def torch_threads(self) -> contextlib.AbstractContextManager[int]:
        """torch's pool at this runner's count for the duration of one call (a no-op at the same count); callers
        that run the prepared module themselves (``layers``' hooks) wrap their calls in it too."""
        return torch_thread_count(self.threads if self.uses_torch_threads else None)

    def prepare(self) -> Runner:
        if not self._prepared:
            started = time.perf_counter()
            with self.torch_threads():  # Inductor generates its code for the count in force
                self._prepare_impl()
            self._record_setup("prepare", None, time.perf_counter() - started)
            self._prepared = True
        return self

    @property
    def setup_time_s(self) -> float:
        """Total one-off setup seconds so far: prepare() plus every per-shape preparation."""
        return sum(event["seconds"] for event in self.setup_events)

    def warm_up(self, batch: torch.Tensor) -> float:
        """Prepare for ``batch``'s shape and run it once, untimed; returns the seconds it took.

        ``forward`` would do the same on the first call of a new shape; calling this first makes explicit that
        compilation, export and first-run allocation are paid here, recorded in ``setup_events``.
        """
        started = time.perf_counter()
        self.forward(self.to_device(batch))
        self.synchronize()
        return time.perf_counter() - started

    def host_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """The host batch as an application would keep it for repeated copies (pinned for CUDA), made once."""
        return self._host_batch_impl(batch)

    def to_device(self, batch: torch.Tensor) -> Any:
        """Host ``[N, C, H, W]`` fp32 batch -> whatever ``forward`` consumes (device, dtype, layout)."""
        self._check_prepared()
        return self._to_device_impl(batch)

    def forward(self, device_input: Any) -> Any:
        """Queue the computation; may return before the device finishes (call ``synchronize``).

        The first call with a new input shape first runs ``_prepare_shape_impl`` (compile, export, session,
        one untimed run), timed and recorded as setup, never as latency.
        """
        self._check_prepared()
        shape = tuple(getattr(device_input, "shape", ()))
        with self.torch_threads():
            if shape not in self._ready_shapes:
                started = time.perf_counter()
                details = self._prepare_shape_impl(device_input) or {}  # waits for its own device work
                self._record_setup("shape", list(shape), time.perf_counter() - started, **details)
                self._ready_shapes.add(shape)
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
        """Settings that determine the numbers, for the summary (setup is one-off time, not latency)."""
        with self.torch_threads():  # torch_threads as the runner's calls see it
            details = self._describe_impl()
        return {"runtime": self.name, "device": str(self.device), "dtype": self.dtype,
                "channels_last": self.channels_last, "threads": self.threads,
                **{name: list(value) if isinstance(value, tuple) else value  # as the JSON file reads them back
                   for name, value in self.option_values.items() if OPTIONS[name].in_every_record},
                "setup_s": round(self.setup_time_s, 4), "setup_events": list(self.setup_events),
                **details}

    def close(self) -> None:
        if self._prepared:
            self._close_impl()
            self._ready_shapes.clear()
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

    def _prepare_shape_impl(self, device_input: Any) -> dict[str, Any] | None:
        """One-off work for a new input shape, finished (synchronised) before returning; may return details for
        the setup record (e.g. cache hits)."""
        return None

    def _host_batch_impl(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def _to_host_impl(self, device_output: Any) -> torch.Tensor:
        return device_output.detach().to("cpu", torch.float32)

    def _describe_impl(self) -> dict[str, Any]:
        return {}

    def _close_impl(self) -> None:  # noqa: B027 (an optional hook: a runner holding nothing keeps this one)
        pass

    def _record_setup(self, step: str, shape: list[int] | None, seconds: float, **details: Any) -> None:
        self.setup_events.append({"step": step, "shape": shape, "seconds": round(seconds, 4), **details})
        _logger.debug("%s setup %s %s: %.3f s %s", self.name, step, shape, seconds, details)

    def _check_prepared(self) -> None:
        if not self._prepared:
            raise RuntimeError(f"{type(self).__name__}: call prepare() (or use it as a context manager) first")
