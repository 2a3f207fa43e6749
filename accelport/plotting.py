"""matplotlib for the reports (imported lazily, Agg backend: no display), and every report's files and picture
written as one atomic set."""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import Writer, write_artifact_set, write_atomic

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


ReportFiles = dict[str, tuple[str, Writer]]  # key -> (file name, writer)


def write_report_set(out_dir: Path, files: ReportFiles | Callable[[str | None], ReportFiles],
                     plot: tuple[str, Callable[[Path], Path | None] | None] | None) -> dict[str, Path]:
    """A report's files and its picture written as one atomic set, so an interrupted run or a full disk never
    leaves a new JSON beside an older page or picture. ``plot``: the picture's file name and ``render(path)``
    (None: not wanted); without matplotlib it is left out, and a picture of an earlier report of that name is
    removed, since it would not show this one; ``plot`` None: the report has no picture at all.
    ``files`` may take the picture's name (None when there is none),
    for a page that links it. Returns key -> path, the picture under ``"plot"``; OutputError (exit 2) naming
    ``--out-dir`` when the set cannot be written (nothing of it was)."""
    name, render = plot or ("", None)
    png = None
    if render is not None:
        with tempfile.TemporaryDirectory(prefix="accelport-plot.") as folder:  # drawn privately, then in the set
            drawn = render(Path(folder) / name)
            png = drawn.read_bytes() if drawn is not None else None
    chosen = files(name if png is not None else None) if callable(files) else files
    if png is not None:
        chosen = {**chosen, "plot": (name, lambda fh: fh.write(png))}
    paths = write_artifact_set(out_dir, dict(chosen.values()))
    if png is None and name:
        (Path(out_dir) / name).unlink(missing_ok=True)
    artifacts = {key: paths[file_name] for key, (file_name, _) in chosen.items()}
    for path in artifacts.values():
        _logger.info("wrote %s", path)
    return artifacts


def save_figure(figure: Any, path: Path, **savefig: Any) -> Path:
    """Render ``figure`` to PNG in memory, close it, and replace ``path`` atomically (never a half-written PNG)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **({"dpi": 110} | savefig))
    plt.close(figure)
    return write_atomic(Path(path), lambda fh: fh.write(buffer.getvalue()))
