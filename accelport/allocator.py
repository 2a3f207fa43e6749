"""The C allocator's settings for this process, set so that a PyTorch latency measures the model, not page faults.

With glibc's defaults, a block above ``M_MMAP_THRESHOLD`` (128 KiB at start; glibc raises it, up to 32 MiB, to
the largest mmapped block freed so far) is served with fresh pages, and a heap top above ``M_TRIM_THRESHOLD`` is
handed back to the kernel at free. PyTorch eager allocates its activations anew at every call, so every call
faults megabytes back in: ~7,000 minor faults per call for ConvNeXt V2 atto at batch 1 (18 ms against 8.8 ms
without them, on a 2-core Zen 5), ~235,000 at batch 32 (470 ms against 218 ms); a compiled package at batch 32
paid 36,000-42,000 (175 ms against 130 ms). ONNX Runtime and OpenVINO keep their own arenas and do not fault.
Worse for a benchmark, the dynamic threshold depends on what the process freed earlier: after OpenVINO had
compiled a model in the same process, eager ran up to 1.6x faster, so a baseline depended on which engines ran
before it.

accelport therefore turns both off (``M_MMAP_MAX`` 0: no mmap for malloc; ``M_TRIM_THRESHOLD`` -1: no trimming)
before any work (the CLI, and ``open_job`` and ``run_zoo`` for API callers), as
``python -m torch.backends.xeon.run_cpu`` does by preloading jemalloc or tcmalloc: every engine in the process then
runs fault-free, whatever ran before it. The price: memory freed stays with the process until it exits, or until
``release_free_memory`` (which the per-configuration peak memory of bench and layers calls before each
measurement). ``ACCELPORT_ALLOCATOR=default`` keeps glibc's defaults; an allocator preloaded (``LD_PRELOAD`` or
``/etc/ld.so.preload``: jemalloc, tcmalloc, mimalloc) and really loaded is left alone. Every result file records
which; ``allocator_kind`` is what comparisons between two records use.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError

_logger = logging.getLogger(__name__)

ENV_VAR = "ACCELPORT_ALLOCATOR"
CHOICES = ("retain", "default")
RETAIN_SETTINGS = "glibc malloc, mmap and trimming off: freed memory kept for reuse (set by accelport)"
DEFAULT_SETTINGS = "glibc malloc, defaults (dynamic mmap threshold, trimming on)"
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_state: dict[str, Any] | None = None


def _glibc() -> tuple[Any, str] | None:
    """This process's C library and its version, where it is glibc (musl and others have no ``mallopt``)."""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc, version().decode()


def _mapped_libraries() -> set[str] | None:
    """The file names of the libraries mapped into this process (Linux); None where that cannot be read."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return {os.path.basename(line.split()[-1]) for line in maps.splitlines() if "/" in line}


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def _malloc_library() -> str | None:
    """The file of the library whose ``malloc`` this process calls (``dladdr`` on the symbol the global scope
    resolves), symlinks resolved; None where that cannot be told."""
    try:
        libc = ctypes.CDLL(None)
        dladdr, malloc = libc.dladdr, libc.malloc
    except (OSError, AttributeError):
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(ctypes.cast(malloc, ctypes.c_void_p), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.basename(os.path.realpath(info.dli_fname.decode(errors="replace")))


def _preloaded(environ: Mapping[str, str]) -> str | None:
    """The allocator library that replaced glibc's ``malloc`` (preloaded through ``LD_PRELOAD`` or
    ``/etc/ld.so.preload``, under any name or symlink), else None. Where ``dladdr`` cannot tell, a preloaded
    jemalloc, tcmalloc or mimalloc named there and mapped into the process."""
    library = _malloc_library()
    if library is not None:
        return None if library.startswith(("libc.so", "libc-")) else library
    entries = environ.get("LD_PRELOAD", "").replace(":", " ").split()
    with contextlib.suppress(OSError):
        entries += Path("/etc/ld.so.preload").read_text().split()
    names = [os.path.basename(entry) for entry in entries]
    candidates = [name for name in names if any(allocator in name for allocator in _PRELOADED)]
    if not candidates:
        return None
    mapped = _mapped_libraries()
    return next((name for name in candidates if mapped is None or name in mapped), None)


def configure_allocator(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Set glibc malloc to keep freed memory for this process (see the module docstring), unless
    ``ACCELPORT_ALLOCATOR=default`` or a preloaded allocator says otherwise; returns what ``allocator_state`` will
    report. A bad value of the variable is a usage error naming it. Once set, a later call with ``default`` in the
    same process keeps it (and says so): glibc's dynamic thresholds cannot be put back as they were."""
    global _state
    environ = os.environ if environ is None else environ
    choice = environ.get(ENV_VAR, "retain").strip().lower() or "retain"
    if choice not in CHOICES:
        raise UsageError(f"{ENV_VAR}={environ.get(ENV_VAR)!r}: expected one of {', '.join(CHOICES)}")
    if _state is not None and _state.get("retain") and choice == "default":  # mallopt cannot be taken back
        _logger.warning("%s=default: this process already keeps freed memory (set by an earlier accelport call in "
                        "it); that stays, and is what its results record", ENV_VAR)
        return dict(_state)
    preloaded = _preloaded(environ)
    glibc = _glibc()
    if preloaded:
        _state = {"settings": f"{preloaded} (LD_PRELOAD)", "retain": False}
    elif glibc is None:
        _state = {"settings": "not glibc: left as it is", "retain": False}
    elif choice == "default":
        _state = {"settings": f"{DEFAULT_SETTINGS}; {ENV_VAR}=default", "retain": False, "glibc": glibc[1]}
    else:
        libc, version = glibc
        if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, -1) != 1:
            _logger.warning("glibc %s refused mallopt: its defaults stay, and PyTorch latencies include page "
                            "faults", version)
            _state = {"settings": DEFAULT_SETTINGS + "; mallopt refused", "retain": False, "glibc": version}
        else:
            _state = {"settings": RETAIN_SETTINGS, "retain": True, "glibc": version}
    _logger.debug("allocator: %s", _state["settings"])
    return dict(_state)


def allocator_state() -> dict[str, Any]:
    """What this process's allocator runs with, for the environment block of every result file."""
    if _state is not None:
        return dict(_state)
    preloaded = _preloaded(os.environ)
    if preloaded:
        return {"settings": f"{preloaded} (LD_PRELOAD)", "retain": False}
    glibc = _glibc()
    if glibc is None:
        return {"settings": "not glibc", "retain": False}
    return {"settings": DEFAULT_SETTINGS, "retain": False, "glibc": glibc[1]}


def release_free_memory() -> bool:
    """Hand the memory the allocator keeps for reuse back to the kernel (glibc's ``malloc_trim``), where a per-
    configuration peak is about to be measured; False where there is no glibc."""
    glibc = _glibc()
    if glibc is None:
        return False
    glibc[0].malloc_trim(0)
    return True


def allocator_kind(record: Any) -> str:
    """A short name for an ``environment.allocator`` record, by what moves latencies, not by how it was set: the
    CLI's ``ACCELPORT_ALLOCATOR=default`` and an API caller that never set it are both "glibc defaults". A record
    this module did not write (absent: an older accelport; hand-edited) is "not recorded" or "unrecognised"."""
    settings = record.get("settings") if isinstance(record, dict) else None
    retain = record.get("retain") if isinstance(record, dict) else None
    if not isinstance(settings, str) or not isinstance(retain, bool):
        return "not recorded"
    if settings.endswith(" (LD_PRELOAD)"):
        return f"{settings.removesuffix(' (LD_PRELOAD)')} preloaded"
    if settings.startswith("glibc malloc"):
        return "glibc, freed memory kept" if retain else "glibc defaults"
    return "not glibc" if settings.startswith("not glibc") else "unrecognised"
