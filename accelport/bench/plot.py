"""bench.png: p50 latency and throughput against batch size, one line per configuration (matplotlib, Agg)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..plotting import pyplot_or_none, save_figure

if TYPE_CHECKING:
    from .document import BenchDocument
    from .rows import BenchRow

_logger = logging.getLogger(__name__)


# 20 distinct colours (tab20's dark shades first, then the light ones) x 5 markers: 100 series before a repeat.
_MARKERS = ("o", "s", "^", "D", "v")


def series_style(index: int) -> dict[str, Any]:
    """Colour and marker of the ``index``-th line: no two of the first 100 lines look alike."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors  # type: ignore[attr-defined]  # tab20 is a ListedColormap
    colour = palette[(2 * index) % 20 + (index // 10) % 2]  # dark shades 0, 2, .., 18, then light 1, .., 19
    return {"color": colour, "marker": _MARKERS[(index + index // 20) % len(_MARKERS)]}


def write_plot(document: BenchDocument, path: Path) -> Path | None:
    """Write the plot atomically; None (and a warning) when matplotlib is not installed."""
    plt = pyplot_or_none(path)
    if plt is None:
        return None

    lines: dict[str, list[BenchRow]] = {}
    for row in document.rows:
        if row.measured:
            lines.setdefault(row.label, []).append(row)
    figure, (latency_ax, throughput_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, (label, rows) in enumerate(lines.items()):
        rows.sort(key=lambda r: r.batch_size)
        failed = not all(r.passed for r in rows)
        peer = rows[0].is_peer  # hand-written recipes: dotted, so the pick stands out against them
        style = {**series_style(index), "linestyle": "--" if failed else ":" if peer else "-"}
        name = label + (" (parity FAIL)" if failed else "")
        batch_sizes = [r.batch_size for r in rows]
        latency_ax.plot(batch_sizes, [r.p50_ms for r in rows], label=name, **style)
        throughput_ax.plot(batch_sizes, [r.images_per_s for r in rows], label=name, **style)
    all_sizes = sorted({r.batch_size for rows in lines.values() for r in rows})
    for ax, ylabel in ((latency_ax, "p50 latency per batch (ms)"), (throughput_ax, "images/s (at p50)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_sizes, [str(b) for b in all_sizes])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    latency_ax.legend(fontsize=8)
    env = document.environment
    figure.suptitle(f"{document.model['name']} on {document.device} ({env['device_name']}, "
                    f"{env['threads']} threads)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)
