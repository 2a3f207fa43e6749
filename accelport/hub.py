"""The Hugging Face cache and Hub: read the cache without network, and ask the Hub only within a deadline.

huggingface_hub's own timeouts bound each socket read, not a request: a server that accepts and then
drips one byte at a time, or never answers, holds a HEAD for minutes (with retries). So every network
step here runs in a daemon thread that is abandoned at its deadline: the lookup (TCP probe and the file's
metadata) as a whole within ``--hub-timeout``, the download within that plus the time the file takes at
``MIN_DOWNLOAD_BYTES_PER_S``.
"""

from __future__ import annotations

import functools
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
SHARD_INDEX_NAME = "model.safetensors.index.json"  # a sharded safetensors checkpoint
CACHED_NAMES = (SAFETENSORS_NAME, SHARD_INDEX_NAME, "pytorch_model.bin")  # looked for in this order
DOWNLOADED_NAMES = (SAFETENSORS_NAME, "pytorch_model.bin")  # single files (timm's own Hub loader takes both)
MIN_DOWNLOAD_BYTES_PER_S = 512 * 1024  # slower than this, a download is abandoned (fetch it with `hf download`)
_TRUE = ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The hub cache the way huggingface_hub resolves it, read at call time: HF_HUB_CACHE, the legacy
    HUGGINGFACE_HUB_CACHE, then HF_HOME/hub (default ~/.cache/huggingface/hub), with ``~`` and ``$VARS``
    expanded."""
    def expanded(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return expanded(os.environ[variable])
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return expanded(hf_home) / "hub"


def _holds_weights(snapshot: Path, dangling_too: bool = False) -> bool:
    """A weights file is there; with ``dangling_too``, also a link to one that points nowhere (an error once that
    snapshot is chosen, not a reason to look at others)."""
    try:
        return any((snapshot / name).is_file() or dangling_too and (snapshot / name).is_symlink()
                   for name in CACHED_NAMES)
    except OSError as exc:  # a snapshot (or the blobs it links to) this process may not enter
        raise WeightsError(f"HF cache entry {snapshot}: cannot be read ({exc.strerror or exc})") from None


def find_in_hf_cache(repo_id: str) -> Path | None:
    """The weights of ``repo_id`` in the local cache (``models--org--name/snapshots/<rev>/<file>``), no network.

    The snapshot is the one ``refs/main`` names (its text stripped: a ref written by hand ends in a newline).
    With no such ref, or one naming a snapshot that is not there (only ``snapshots/`` copied across, or a
    download by commit), the only snapshot holding weights is used, with a warning naming it; several are an
    error listing them. The files themselves are looked at, not huggingface_hub's ``.no_exist`` markers (a
    stale one hid a file that was there). A weights entry whose symlink points nowhere (a blob deleted or not
    copied across) is an error naming the link: a random init would hide that real weights were meant to be
    there.
    """
    repo = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        ref: str | None = (repo / "refs" / "main").read_text().strip() or None
    except OSError:
        ref = None
    if ref is not None and (snapshots / ref).is_dir() and _holds_weights(snapshots / ref, dangling_too=True):
        chosen = snapshots / ref
    else:
        holding = [s for s in sorted(snapshots.iterdir()) if s.is_dir() and _holds_weights(s)]
        if not holding:
            return None
        why = ("has no refs/main" if ref is None else f"refs/main names {ref}, which is not in snapshots/"
               if not (snapshots / ref).is_dir() else f"refs/main names {ref}, whose snapshot holds no weights")
        if len(holding) > 1:
            raise WeightsError(f"{repo}: {why}, and {len(holding)} snapshots hold weights "
                               f"({', '.join(s.name for s in holding)}); pass --weights with the one you mean")
        chosen = holding[0]
        _logger.warning("%s %s; using its only snapshot holding weights, %s", repo, why, chosen.name)
    for name in CACHED_NAMES:
        entry = chosen / name
        if entry.is_symlink() and not entry.exists():
            raise WeightsError(f"{entry}: the HF cache entry is a dangling symlink (to {os.readlink(entry)}); "
                               f"download {repo_id} again or pass --weights PATH")
        if entry.is_file():
            return entry
    return None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in _TRUE


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def endpoint_problem() -> str | None:
    """Why ``HF_ENDPOINT`` is not a URL huggingface_hub can use, or None. huggingface_hub parses it when timm
    imports it, so a malformed one (a port out of range or not a number, a broken IPv6 host) raised a traceback
    before any command started; said here first, naming the variable."""
    text = os.environ.get("HF_ENDPOINT")
    if text is None:
        return None
    try:
        urlparse(text).port  # noqa: B018 (reading the port is the check: out of range or not a number raises)
    except ValueError as exc:
        return (f"environment variable HF_ENDPOINT={text!r}: not a usable URL ({exc}); unset it or give one such as "
                "https://huggingface.co")
    return None


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
    """Fetch ``model.safetensors`` (else ``pytorch_model.bin``) into the HF cache when the Hub answers in time;
    None (and a log line) otherwise."""
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
    failures = []
    for filename in DOWNLOADED_NAMES:
        lookup = functools.partial(get_hf_file_metadata, hf_hub_url(repo_id, filename, endpoint=endpoint),
                                   timeout=timeout_s, endpoint=endpoint)
        finished, meta = _within(deadline - time.monotonic(), lookup)
        if not finished:
            _logger.warning("Hugging Face Hub (%s) accepted the connection but did not answer within %.1fs "
                            "(--hub-timeout); not downloading %s", endpoint, timeout_s, repo_id)
            return None
        if not isinstance(meta, BaseException):
            break
        failures.append(f"{filename}: {meta}")
    else:
        _logger.warning("Lookup of %s on the Hub found neither %s (%s)", repo_id, " nor ".join(DOWNLOADED_NAMES),
                        "; ".join(failures))
        return None
    budget = timeout_s + (meta.size or 0) / MIN_DOWNLOAD_BYTES_PER_S
    finished, path = _within(budget, lambda: hf_hub_download(repo_id, filename, cache_dir=hf_cache_dir(),
                                                             etag_timeout=timeout_s, endpoint=endpoint))
    if not finished:
        _logger.warning("Download of %s/%s (%s bytes) took more than %.0fs (below %d KiB/s); abandoned. Fetch it "
                        "with `hf download %s` or pass --weights PATH", repo_id, filename, meta.size, budget,
                        MIN_DOWNLOAD_BYTES_PER_S // 1024, repo_id)
        return None
    if isinstance(path, BaseException):
        _logger.warning("Download of %s/%s failed: %s", repo_id, filename, path)
        return None
    return Path(path)
