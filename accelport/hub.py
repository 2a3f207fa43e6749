"""The Hugging Face cache and Hub: read the cache without network, and ask the Hub only within a deadline.

huggingface_hub's own timeouts bound each socket read, not a request: a server that accepts and then
drips one byte at a time, or never answers, holds a HEAD for minutes (with retries). So every network
step here runs in a daemon thread that is abandoned at its deadline: the lookup (TCP probe and the file's
metadata) as a whole within ``--hub-timeout``, the download within that plus the time the file takes at
``MIN_DOWNLOAD_BYTES_PER_S``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import WeightsError

_logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
CACHED_NAMES = (SAFETENSORS_NAME, "pytorch_model.bin")
MIN_DOWNLOAD_BYTES_PER_S = 512 * 1024  # slower than this, a download is abandoned (fetch it with `hf download`)
_TRUE = ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The hub cache the way huggingface_hub resolves it, read at call time (HF_HUB_CACHE, then HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


def find_in_hf_cache(repo_id: str) -> Path | None:
    """``models--org--name/snapshots/<rev>/model.safetensors`` from the local cache, without network.

    A snapshot entry whose symlink points nowhere (a blob deleted or not copied across) is an error naming
    the link: falling back to a random init would hide that the real weights were meant to be there.
    """
    from huggingface_hub import try_to_load_from_cache

    for filename in CACHED_NAMES:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    snapshots = hf_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    for snapshot in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:  # glob skips dangling links
        link = snapshot / SAFETENSORS_NAME
        if link.is_symlink() and not link.exists():
            raise WeightsError(f"{link}: the HF cache entry is a dangling symlink (to {os.readlink(link)}); "
                               f"download {repo_id} again or pass --weights PATH")
    return None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in _TRUE


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _within(seconds: float, call: Callable[[], Any]) -> tuple[bool, Any]:
    """``(finished, result or exception)`` of ``call()`` run in a daemon thread abandoned after ``seconds``."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller, who decides
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True, name="accelport-hub")
    worker.start()
    worker.join(max(seconds, 0.0))
    return (True, outcome[0]) if outcome else (False, None)


def hub_reachable(timeout_s: float) -> bool:
    """True if the Hub endpoint accepts a TCP connection within ``timeout_s`` (DNS included: no offline hang)."""
    if hub_offline():
        return False
    url = urlparse(_endpoint())
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False

    def probe() -> bool:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True

    finished, result = _within(timeout_s, probe)  # getaddrinfo ignores socket timeouts: a thread bounds it
    return finished and result is True


def download_from_hub(repo_id: str, timeout_s: float) -> Path | None:
    """Fetch ``model.safetensors`` into the HF cache when the Hub answers in time; None (and a log line) otherwise."""
    if hub_offline():
        _logger.info("HF_HUB_OFFLINE is set: not looking for %s on the Hugging Face Hub", repo_id)
        return None
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    deadline = time.monotonic() + timeout_s
    endpoint = _endpoint()
    if not hub_reachable(timeout_s):
        _logger.info("Hugging Face Hub (%s) not reachable within %.1fs; not downloading %s", endpoint, timeout_s,
                     repo_id)
        return None
    url = hf_hub_url(repo_id, SAFETENSORS_NAME, endpoint=endpoint)
    finished, meta = _within(deadline - time.monotonic(),
                             lambda: get_hf_file_metadata(url, timeout=timeout_s, endpoint=endpoint))
    if not finished:
        _logger.warning("Hugging Face Hub (%s) accepted the connection but did not answer within %.1fs "
                        "(--hub-timeout); not downloading %s", endpoint, timeout_s, repo_id)
        return None
    if isinstance(meta, BaseException):
        _logger.warning("Lookup of %s/%s on the Hub failed: %s", repo_id, SAFETENSORS_NAME, meta)
        return None
    budget = timeout_s + (meta.size or 0) / MIN_DOWNLOAD_BYTES_PER_S
    finished, path = _within(budget, lambda: hf_hub_download(repo_id, SAFETENSORS_NAME, cache_dir=hf_cache_dir(),
                                                             etag_timeout=timeout_s, endpoint=endpoint))
    if not finished:
        _logger.warning("Download of %s/%s (%s bytes) took more than %.0fs (below %d KiB/s); abandoned. Fetch it "
                        "with `hf download %s` or pass --weights PATH", repo_id, SAFETENSORS_NAME, meta.size, budget,
                        MIN_DOWNLOAD_BYTES_PER_S // 1024, repo_id)
        return None
    if isinstance(path, BaseException):
        _logger.warning("Download of %s/%s failed: %s", repo_id, SAFETENSORS_NAME, path)
        return None
    return Path(path)
