"""On-disk cache for one-off artifacts (ONNX exports, AOTInductor packages, compiler caches).

An entry's key is the SHA-256 of everything that determines its bytes: the model's architecture, a digest
of its actual weights (so a random init, a features head or another checkpoint never collide), the runtime
settings (dtype, layout, input shape...) and the versions of the libraries that produced it. A change in any
of them is a different entry: nothing is ever invalidated in place. Entries are written atomically, each with
a ``.key.json`` beside it that lists the fields, so ``ls`` on the cache explains itself, and the SHA-256 of the
artifact's bytes: an entry whose bytes no longer match (a disk error, a hand edit, a copy cut short) is set
aside with a warning and built again, instead of failing its route on every later run and leaving a slower
route to stand in for it.

Location: ``--cache-dir``, else ``$ACCELPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/accelport`` (``~/.cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_json_atomic
from ..cache_home import default_cache_dir
from ..environment import package_version

_logger = logging.getLogger(__name__)

KEY_CHARS = 24


def library_versions(*packages: str) -> dict[str, str | None]:
    return {package: package_version(package) for package in packages}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes): the weights actually in memory.

    Any buffer counts: 0-dim ones (a BatchNorm's ``num_batches_tracked``), bool, integer and bf16 tensors are
    hashed through a flat byte view; a non-tensor ``_extra_state`` by its repr.
    """
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}|object|{value!r}|".encode())
            continue
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_identity(model: torch.nn.Module, rewrites: tuple[str, ...] = ()) -> dict[str, Any]:
    """What names the model in a key: timm's architecture and head size, plus its weights' digest."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {
        "architecture": cfg.get("architecture") or type(model).__name__,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_classes": int(getattr(model, "num_classes", 0) or 0),
        "weights_sha256": weights_digest(model),
        # what graph_rewrites.py changes in the exported copy; absent for an unchanged one, whose keys stay
        **({"graph_rewrites": list(rewrites)} if rewrites else {}),
    }


def content_digest(path: Path) -> str:
    """SHA-256 of an artifact's bytes; for a folder (an OpenVINO IR), of each file's relative name and bytes."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CacheEntry:
    """One artifact: where it lives, what keys it, and whether it was there already, intact."""

    kind: str
    path: Path
    key: str
    fields: dict[str, Any] = field(default_factory=dict)
    _intact: bool | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key_file(self) -> Path:
        return self.path.with_name(self.path.name + ".key.json")

    @property
    def present(self) -> bool:
        """The artifact is there, unchecked: enough to order routes, whose own ``hit`` then checks it once."""
        return self.path.exists()

    @property
    def hit(self) -> bool:
        """The artifact is there and its bytes are those recorded when it was written (checked once per entry
        object). A damaged one, or one without a recorded digest (written by an accelport before digests), is
        moved out of the way with a warning and counts as a miss, so the caller builds it again."""
        if self._intact is None:
            self._intact = self._verify()
        return self._intact

    def _verify(self) -> bool:
        if not self.path.exists():
            return False
        try:
            recorded = json.loads(self.key_file.read_text()).get("content_sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded is not None and recorded == content_digest(self.path):
            return True
        _logger.warning("cache: %s %s %s; building it again", self.kind, self.path,
                        "has no recorded digest" if recorded is None else "does not match the digest recorded "
                        "when it was written (damaged)")
        self._set_aside()
        return False

    def _set_aside(self) -> None:
        """Move the entry out of its place (atomic, so a reader never sees half of it), then delete it."""
        trash = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.damaged.", dir=self.path.parent))
        with contextlib.suppress(OSError):  # another process moved or replaced it first
            os.replace(self.path, trash / self.path.name)
        shutil.rmtree(trash, ignore_errors=True)
        self.key_file.unlink(missing_ok=True)

    @property
    def notes(self) -> dict[str, Any]:
        """What the build found out and recorded beside the artifact (``produce(notes=...)``), for a cache hit
        to say again what the first build said; {} when nothing was recorded."""
        try:
            notes = json.loads(self.key_file.read_text()).get("notes")
        except (OSError, ValueError, AttributeError):
            return {}
        return notes if isinstance(notes, dict) else {}

    def produce(self, build: Callable[[Path], object], notes: Callable[[], dict[str, Any]] | None = None) -> Path:
        """Build the artifact into a private temporary path with ``build(tmp_path)``, record its digest (and
        ``notes()``, read after the build), then move it into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            tmp_path = tmp_dir / self.path.name
            build(tmp_path)
            record = {"kind": self.kind, "key": self.key, "fields": self.fields,
                      "content_sha256": content_digest(tmp_path), **({"notes": notes()} if notes else {})}
            if self.path.is_dir():  # a damaged folder left behind: os.replace cannot overwrite a non-empty one
                self._set_aside()
            write_json_atomic(self.key_file, record)
            os.replace(tmp_path, self.path)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        self._intact = True
        _logger.info("cached %s %s", self.kind, self.path)
        return self.path


def cache_entry(cache_dir: str | Path | None, kind: str, fields: dict[str, Any], suffix: str) -> CacheEntry:
    """The entry for ``fields`` (its key is the SHA-256 of their canonical JSON) under ``cache_dir/kind``."""
    canonical = json.dumps(fields, sort_keys=True, default=str)
    key = hashlib.sha256(canonical.encode()).hexdigest()[:KEY_CHARS]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return CacheEntry(kind, root / kind / f"{key}{suffix}", key, fields)
