"""zoo.png: a heat-map of models (rows) x runtime/dtype (columns), coloured by verdict, speed-up in each cell."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..plotting import pyplot_or_none, save_figure
from .cell import STATUSES
from .report import cell_text

if TYPE_CHECKING:
    from .document import ZooDocument

_logger = logging.getLogger(__name__)

COLOURS = {"passed": "#4caf50", "failed": "#e53935", "unsupported": "#bdbdbd", "crashed": "#8e24aa",
           "timed_out": "#fb8c00"}
REASON_CHARS = 30  # the start of a non-passing cell's reason, under its verdict; zoo.md has the whole reason
LEGEND = {"passed": "passed", "failed": "failed parity", "unsupported": "unsupported (reason in zoo.md)",
          "crashed": "crashed / out of memory", "timed_out": "timed out"}


def write_heatmap(document: ZooDocument, path: Path) -> Path | None:
    """Write the heat-map atomically; None (and a warning) without matplotlib."""
    plt = pyplot_or_none(path)
    if plt is None:
        return None
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    models, columns = document.models, document.columns
    by_cell = {(r.model, r.column): r for r in document.rows}
    codes = [[STATUSES.index(by_cell[(m, c)].status) if (m, c) in by_cell else -1 for c in columns]
             for m in models]
    figure, ax = plt.subplots(figsize=(max(6.0, 2.5 + 1.9 * len(columns)), 1.4 + 0.36 * len(models)))
    colours = ListedColormap(["#ffffff"] + [COLOURS[s] for s in STATUSES])
    ax.imshow([[code + 1 for code in row] for row in codes], cmap=colours, vmin=0, vmax=len(STATUSES),
              aspect="auto")
    for y, model in enumerate(models):
        for x, name in enumerate(columns):
            ax.text(x, y, cell_text(by_cell.get((model, name)), REASON_CHARS), ha="center", va="center",
                    fontsize=6)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.legend(handles=[Patch(color=COLOURS[s], label=LEGEND[s]) for s in STATUSES], loc="upper center",
              bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=7, frameon=False)
    ax.set_title(f"accelport zoo on {document.device}: verdict and speed-up over eager fp32", fontsize=9, pad=24)
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)
