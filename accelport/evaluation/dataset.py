"""The dataset as a stream: list the images once, then decode and preprocess them in DataLoader workers.

Every batch is padded to the full ``--batch-size`` with zero images: CPU (oneDNN) and GPU kernels are
chosen by batch size, so an image's output would otherwise change in the last bits with the number of
images that share its batch. With padding it does not, and single-process, distributed, resumed and
cached runs give bitwise-identical outputs. A bad image never raises inside a worker (the DataLoader would
wrap the message in a worker traceback): the worker returns the reason and the main process decides.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from ..preprocess import discover_images, preprocess_file
from .labels import LabelSource, resolve_labels

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetListing:
    """What ``--data`` holds: every image in sorted order (``items``) and where their labels come from."""

    root: Path
    items: list[DatasetItem]
    labels: LabelSource

    @property
    def labelled(self) -> bool:
        return self.labels.kind != "none"


@dataclass(frozen=True)
class DatasetItem:
    """One image: its place in the sorted listing, its path relative to ``--data`` (its identity) and label."""

    position: int
    key: str
    path: Path
    label: int | None


def list_dataset(root: str | Path, labels_spec: str, model: torch.nn.Module, num_classes: int) -> DatasetListing:
    """Every image under ``root`` (recursively, sorted) with its label; cheap: nothing is decoded here."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a folder")
    try:
        paths = discover_images([root])
    except InputError as exc:  # its own words (a folder that cannot be listed, none found), under eval's flag
        raise InputError(str(exc).replace("--images ", "--data ", 1)) from None
    keys = [p.relative_to(root).as_posix() for p in paths]
    labels, source = resolve_labels(labels_spec, keys, model, num_classes)
    items = [DatasetItem(i, k, p, y) for i, (k, p, y) in enumerate(zip(keys, paths, labels, strict=True))]
    _logger.info("--data %s: %d images, labels: %s%s", root, len(items), source.kind,
                 f" ({source.format})" if source.format else "")
    return DatasetListing(root, items, source)


class ImageDataset(Dataset):
    """Decodes and preprocesses one image per index; returns the reason instead of raising on a bad file."""

    def __init__(self, items: list[DatasetItem], transform: Any):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None, float]:
        started = time.perf_counter()
        try:
            tensor, error = preprocess_file(self.items[index].path, self.transform), None
        except InputError as exc:
            tensor, error = None, str(exc)
        return index, tensor, error, time.perf_counter() - started


@dataclass
class LoadedBatch:
    """A fixed-size batch: the first ``len(indices)`` rows are real images, the rest zero padding."""

    indices: list[int]  # into the loader's item list, one per real row
    tensor: torch.Tensor
    failures: list[tuple[int, str]] = field(default_factory=list)
    decode_s: float = 0.0  # worker time spent decoding and preprocessing these images

    def pin_memory(self) -> LoadedBatch:  # called by the DataLoader's pinning thread
        self.tensor = self.tensor.pin_memory()
        return self

    @property
    def size(self) -> int:
        return len(self.indices)


class PaddedCollate:
    """Stacks the good images of a batch and pads to ``batch_size`` (a class, so workers can pickle it)."""

    def __init__(self, batch_size: int, input_size: tuple[int, ...]):
        self.batch_size = batch_size
        self.input_size = tuple(input_size)

    def __call__(self, samples: list[tuple[int, torch.Tensor | None, str | None, float]]) -> LoadedBatch:
        tensor = torch.zeros((self.batch_size, *self.input_size), dtype=torch.float32)
        indices: list[int] = []
        failures: list[Any] = []
        for index, image, error, _ in samples:
            if image is None:
                failures.append((index, str(error)))
                continue
            tensor[len(indices)] = image
            indices.append(index)
        return LoadedBatch(indices, tensor, failures, sum(s[3] for s in samples))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the kernel kills the worker when its parent dies (Linux), and the worker
    ignores SIGTERM.

    Without the first, a worker of an eval killed with ``kill -9`` lives on until torch's watchdog notices (seconds)
    and prints a traceback. Without the second, a SIGTERM to the whole process group (``timeout``, systemd,
    ``scancel``) killed the workers under the parent, which printed a "DataLoader worker is killed by signal"
    traceback after its own clean "terminated" message; the parent stops its workers itself. Elsewhere (not Linux)
    this is a no-op and torch's watchdog remains.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(items: list[DatasetItem], transform: Any, batch_size: int, input_size: tuple[int, ...],
                workers: int, pin_memory: bool) -> DataLoader:
    """A streaming loader in listing order: memory holds a few batches in flight, whatever the dataset size."""
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=PaddedCollate(batch_size, input_size),
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=functools.partial(die_with_parent, os.getpid()) if workers > 0 else None,
    )
