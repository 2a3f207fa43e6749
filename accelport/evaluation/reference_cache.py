"""``--reference-cache DIR``: the CPU fp32 reference outputs, computed once per model, weights and data config.

Layout: ``DIR/<model key>/meta.json`` says what the key stands for; ``DIR/<model key>/<ab>/<image key>.npy``
holds one image's float32 output. The model key hashes the model name, head, weights sha256 (or the seed of
a random init) and the data config; the image key hashes the file's absolute path, size and modification time,
so an edited image is recomputed. The batch size is not part of the key, so entries serve any ``--batch-size``;
an entry computed at another batch size can differ from a fresh one in the last bit (see dataset.py).
One small file per image keeps concurrent ranks from ever writing the same file; a file that cannot be read
back (e.g. cut short by a crash) is treated as missing and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic

_logger = logging.getLogger(__name__)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


class ReferenceCache:
    """Get and put reference outputs by image; counts hits and misses for the report."""

    def __init__(self, root: str | Path, identity: dict[str, Any]):
        self.identity = identity
        self.dir = Path(root) / _digest(identity)[:20]
        self.hits = 0
        self.misses = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json_atomic(meta, identity)

    @staticmethod
    def image_key(path: Path) -> str:
        stat = path.stat()
        return _digest([str(path.resolve()), stat.st_size, stat.st_mtime_ns])

    def _file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str, num_outputs: int | None = None) -> np.ndarray | None:
        file = self._file(key)
        try:
            value = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            value = None
        if value is None or value.ndim != 1 or (num_outputs is not None and value.shape[0] != num_outputs):
            if file.exists():
                _logger.warning("reference cache %s: unreadable entry, recomputing", file)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        """Write beside the final name, then rename (no fsync: a cache entry lost in a crash is recomputed)."""
        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(value, np.float32))
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def to_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "hits": self.hits, "misses": self.misses, "identity": self.identity}
