"""Where accelport keeps what it builds (exports, compiled packages, the simulated device): one folder.

A module of its own, importing nothing of accelport, so that the device layer (the simulated device's build) and
the runners' caches can both use it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ACCELPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/accelport``, else ``~/.cache/accelport``."""
    if os.environ.get("ACCELPORT_CACHE_DIR"):
        return Path(os.environ["ACCELPORT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).expanduser() / "accelport"
