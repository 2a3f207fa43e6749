"""Where accelport keeps what it builds (exports, compiled packages, the simulated device): one folder.

A module of its own, importing nothing of accelport, so that the device layer (the simulated device's build) and
the runners' caches can both use it without importing each other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ACCELPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/accelport``, else ``~/.cache/accelport``."""
    if os.environ.get("ACCELPORT_CACHE_DIR"):
        return Path(os.environ["ACCELPORT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).expanduser() / "accelport"


def cache_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be accelport's cache folder (a file, under a file, or in a folder that refuses new
    entries), else None; nothing is left behind. Checked before any work, so a bad setting is not found after a
    model has loaded. Writing is tried, not read from the permission bits: root passes ``os.access`` on /sys and on
    read-only mounts, where every write then fails."""
    if path.exists() and not path.is_dir():
        return "is not a folder"
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is not a folder"
    try:
        tempfile.TemporaryDirectory(prefix=".accelport-probe.", dir=ancestor).cleanup()
    except OSError as exc:
        where = "is not writable" if ancestor == path else f"cannot be created in {ancestor}"
        return f"{where} ({exc.strerror or exc})"
    return None


def cache_dir_source(flag_value: str | None) -> tuple[Path, str]:
    """The cache folder in use and what set it (the flag, a variable or the default), for error messages."""
    if flag_value:
        return Path(flag_value).expanduser(), "--cache-dir"
    for variable in ("ACCELPORT_CACHE_DIR", "XDG_CACHE_HOME"):
        if os.environ.get(variable):
            return default_cache_dir(), variable
    return default_cache_dir(), "the default cache folder"
