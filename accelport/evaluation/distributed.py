"""torch.distributed for ``torchrun ... -m accelport eval``: one process per device, results gathered on rank 0.

Launched by torchrun (``WORLD_SIZE`` > 1), each process joins the group with the backend of its device (gloo
on CPU, nccl on CUDA, hccl on Ascend, xccl on XPU) and takes the device of its local rank. Only Python
objects travel (done-lists and per-image records), through a gloo group, so no accelerator memory is used
and the same code serves every backend. The split is strided and unpadded: unlike ``DistributedSampler``,
nothing is duplicated to even the shards out, so every image is evaluated exactly once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..devices import resolve_device
from ..errors import DeviceError, PeerError, UsageError
from ..formatting import one_line
from ..typed_numbers import whole_number

_logger = logging.getLogger(__name__)

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl", "xpu": "xccl"}
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; a single process is rank 0 of 1 and every collective is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    group: Any = None  # the gloo group that carries Python objects

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_json(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend,
                "master_addr": os.environ.get("MASTER_ADDR") if self.enabled else None}


def _environ_int(name: str, default: int, minimum: int) -> int:
    """An integer torchrun's variables hold (also set by hand: docs/eval.md); exit 2 naming it when it is not one."""
    text = os.environ.get(name)
    if text is None:
        return default
    value = whole_number(text.strip())
    if value is None or value < minimum:
        raise UsageError(f"environment variable {name}={text[:40]!r}: not an integer >= {minimum} of at most 18 "
                         "digits (torchrun sets it; by hand, set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and "
                         "MASTER_PORT together)")
    return value


def launched_by_torchrun() -> bool:
    return _environ_int("WORLD_SIZE", 1, 1) > 1


def device_for_rank(spec: str, local_rank: int) -> torch.device:
    """``--device cuda`` or ``auto`` becomes the local rank's device; an explicit index is honoured as given. One
    device per process (``ASCEND_RT_VISIBLE_DEVICES``/``CUDA_VISIBLE_DEVICES`` per rank) is the usual setup; more
    local ranks than devices share one, which is said."""
    device = resolve_device(spec)
    if device.type == "cpu" or ":" in spec:
        return device
    count = torch.accelerator.device_count() if torch.accelerator.is_available() else 1
    if 1 < count <= local_rank:
        _logger.warning("local rank %d, %d %s devices visible: this rank shares %s:%d with local rank %d (its memory "
                        "and its time); start at most %d processes per node", local_rank, count, device.type,
                        device.type, local_rank % count, local_rank % count, count)
    return torch.device(device.type, local_rank % max(count, 1))


def init_distributed(device_spec: str, timeout_s: float) -> tuple[DistContext, torch.device]:
    """Join the torchrun job when there is one; otherwise a single-process context."""
    if not launched_by_torchrun():
        return DistContext(), resolve_device(device_spec)
    import torch.distributed as dist

    rank, world = _environ_int("RANK", 0, 0), _environ_int("WORLD_SIZE", 1, 1)
    local_rank = _environ_int("LOCAL_RANK", 0, 0)
    if rank >= world:  # it waited 30 minutes for a rendezvous no rank could complete
        raise UsageError(f"environment variable RANK={rank}: not under WORLD_SIZE={world} (ranks are 0..{world - 1})")
    device = device_for_rank(device_spec, local_rank)
    backend = BACKENDS.get(device.type)
    if backend is None:
        raise DeviceError(f"--device {device}: torch.distributed has no backend for {device.type}; run one "
                          "process per machine without torchrun")
    if device.type != "cpu":
        torch.accelerator.set_device_index(device.index)
    try:
        dist.init_process_group(backend=backend, timeout=dt.timedelta(seconds=timeout_s))
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"torch.distributed ({backend}) could not start rank {rank} of {world}: {exc} "
                         "(launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)") from None
    group = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    _logger.info("rank %d of %d (local rank %d) on %s, backend %s", rank, world, local_rank, device, backend)
    return DistContext(rank, world, local_rank, backend, group), device


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard(items: list[T], ctx: DistContext) -> list[T]:
    """Every ``world_size``-th item from ``rank``: all items exactly once over the ranks, none padded."""
    return items[ctx.rank :: ctx.world_size]


@contextlib.contextmanager
def peers_alive(step: str) -> Iterator[None]:
    """A collective whose peer process stopped (its own bad input, exit 2, said in one line there) is this
    process's error too, said in one line, not an internal error's traceback (gloo: "Connection closed by peer")."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed's DistError and DistBackendError are RuntimeErrors
        raise PeerError(f"another process of this torchrun job stopped during the {step} (its own message, above or "
                        f"in its log, says why): {one_line(str(exc), 160)}") from None


def all_gather(ctx: DistContext, obj: T) -> list[T]:
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * ctx.world_size
    with peers_alive("all_gather"):
        dist.all_gather_object(gathered, obj, group=ctx.group)
    return gathered


def gather_to_main(ctx: DistContext, obj: T) -> list[T] | None:
    """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    with peers_alive("gather"):
        dist.gather_object(obj, gathered, dst=0, group=ctx.group)
    return gathered


def broadcast_from_main(ctx: DistContext, obj: T) -> T:
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    with peers_alive("broadcast"):
        dist.broadcast_object_list(box, src=0, group=ctx.group)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        with peers_alive("barrier"):
            dist.barrier(group=ctx.group)
