"""matplotlib for the reports: imported lazily with the Agg backend (no display), figures written atomically."""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import write_atomic

_logger = logging.getLogger(__name__)


def pyplot_or_none(path: Path) -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend; None (and a warning naming ``path``) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", Path(path).name)
        return None
    return plt


def rendered_png(render: Callable[[Path], Path | None], name: str) -> bytes | None:
    """The bytes of the PNG ``render(path)`` draws (None without matplotlib), drawn into a private temporary
    folder: for a report whose files are written as one atomic set with the picture among them."""
    with tempfile.TemporaryDirectory(prefix="accelport-plot.") as folder:
        drawn = render(Path(folder) / name)
        return drawn.read_bytes() if drawn is not None else None


def save_figure(figure: Any, path: Path, **savefig: Any) -> Path:
    """Render ``figure`` to PNG in memory, close it, and replace ``path`` atomically (never a half-written PNG)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **({"dpi": 110} | savefig))
    plt.close(figure)
    return write_atomic(Path(path), lambda fh: fh.write(buffer.getvalue()))
