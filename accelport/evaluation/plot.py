"""eval_hist.png: how far each image's output moved, as histograms of 1 - cosine and relative L2 error.

Both axes are logarithmic: fp32 ports differ by ~1e-7 and half precision by ~1e-2, and one picture must show
either. Exact agreement (a value of 0) cannot sit on a log axis; it is drawn at the floor and counted in the
legend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plotting import pyplot_or_none, save_figure

_logger = logging.getLogger(__name__)

FLOOR = 1e-16


def _log_bins(values: np.ndarray) -> np.ndarray:
    low = np.log10(max(values.min(), FLOOR))
    high = np.log10(max(values.max(), FLOOR * 10))
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    return np.logspace(low, high, 40)


def write_histogram(path: Path, cosines: Sequence[float], rel_l2: Sequence[float], title: str) -> Path | None:
    """Two panels, one per metric, saved atomically with matplotlib's Agg backend (no display needed)."""
    plt = pyplot_or_none(path)
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator, NullFormatter

    panels = (
        ("1 - cosine similarity", np.clip(1.0 - np.asarray(cosines, np.float64), 0.0, None)),
        ("relative L2 error ‖t - r‖ / ‖r‖", np.asarray(rel_l2, np.float64)),
    )
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, (label, values) in zip(axes, panels, strict=True):
        finite = values[np.isfinite(values)]
        exact = int((finite <= 0).sum())
        shown = np.maximum(finite, FLOOR)
        if shown.size:
            axis.hist(shown, bins=_log_bins(shown), color="tab:blue",
                      label=f"{finite.size} images" + (f" ({exact} exactly equal, at {FLOOR:g})" if exact else ""))
            axis.legend(loc="upper right", fontsize=8)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a narrow range
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel(label)
        axis.set_ylabel("images")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)
