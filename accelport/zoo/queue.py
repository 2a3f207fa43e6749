"""The cells still to run, handed out once each: in order in one process, from a shared counter under torchrun.

Under torchrun every rank takes the next index from an atomic counter on torch.distributed's key-value store
(``store.add``), so a rank that drew fast models simply takes more: slow and fast models balance without a
plan. Each finished row is published on the store under its index; rank 0 collects them all at the end, so
the merged result depends only on the cells, never on which rank ran which.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..evaluation.distributed import DistContext

_logger = logging.getLogger(__name__)

PREFIX = "accelport-zoo/"


class CellQueue:
    """Indices ``0..size-1``, each taken by exactly one process."""

    def __init__(self, ctx: DistContext, size: int):
        self.size = size
        self._ctx = ctx
        self._next = 0
        self._rows: dict[int, dict[str, Any]] = {}
        self._store = None
        if ctx.enabled:
            import torch.distributed as dist

            self._store = dist.PrefixStore(PREFIX, dist.distributed_c10d._get_default_store())

    def take(self) -> int | None:
        """The next index nobody has taken, or None when all are taken."""
        if self._store is None:
            index, self._next = self._next, self._next + 1
        else:
            index = int(self._store.add("next", 1)) - 1
        return index if index < self.size else None

    def publish(self, index: int, row: dict[str, Any]) -> int:
        """Make ``row`` available to rank 0; returns how many cells are finished so far (all ranks)."""
        if self._store is None:
            self._rows[index] = row
            return len(self._rows)
        self._store.set(f"row/{index}", json.dumps(row, allow_nan=True))
        return int(self._store.add("done", 1))

    def finished(self) -> int:
        return len(self._rows) if self._store is None else int(self._store.add("done", 0))

    def collect(self) -> list[dict[str, Any]]:
        """Rank 0: every published row in index order, waiting for those still running elsewhere."""
        if self._store is None:
            return [self._rows[i] for i in range(self.size)]
        return [json.loads(self._store.get(f"row/{i}")) for i in range(self.size)]
