"""matplotlib for the reports: imported lazily with the Agg backend (no display), figures written atomically."""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import Writer, write_atomic, write_set_atomic

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


def write_report_set(out_dir: Path, files: dict[str, tuple[str, Writer]],
                     plot: tuple[str, Callable[[Path], Path | None]]) -> dict[str, Path]:
    """A report's files and its picture (``plot``: file name and ``render(path)``; left out without matplotlib)
    written as one atomic set, so an interrupted run never leaves a new JSON beside an older page or picture; returns
    key -> path, the picture under ``"plot"``."""
    name, render = plot
    with tempfile.TemporaryDirectory(prefix="accelport-plot.") as folder:  # drawn privately, then part of the set
        drawn = render(Path(folder) / name)
        png = drawn.read_bytes() if drawn is not None else None
    if png is not None:
        files = {**files, "plot": (name, lambda fh: fh.write(png))}
    paths = write_set_atomic(out_dir, dict(files.values()))
    return {key: paths[file_name] for key, (file_name, _) in files.items()}


def save_figure(figure: Any, path: Path, **savefig: Any) -> Path:
    """Render ``figure`` to PNG in memory, close it, and replace ``path`` atomically (never a half-written PNG)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **({"dpi": 110} | savefig))
    plt.close(figure)
    return write_atomic(Path(path), lambda fh: fh.write(buffer.getvalue()))
