"""layers.png: relative L2 error and cosine against depth for both modes, the first divergent modules marked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..plotting import pyplot_or_none, save_figure

_logger = logging.getLogger(__name__)

_FLOOR = 1e-12  # exact zeros (identical outputs) are drawn here on the log scales
_COLORS = {"chained": "tab:blue", "isolated": "tab:orange"}


def _series(modules: list[dict[str, Any]], mode: str, key: str, transform) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in modules:
        entry = row.get(mode)
        if entry is not None:
            xs.append(row["index"])
            ys.append(max(_FLOOR, transform(entry[key])))
    return xs, ys


def _section(name: str, containers: set[str]) -> str:
    """``stages.2`` for ``stages.2.blocks.1.mlp.fc2``, ``blocks.3`` for ``blocks.3.attn``, else the top-level name."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[1].isdigit() and ".".join(parts[:2]) in containers:
        return ".".join(parts[:2])
    return parts[0]


def _section_starts(modules: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Where each section (stem, stages.N, head) begins, to mark depth on the x axis; one-row containers skipped."""
    containers = {row["module"] for row in modules if not row["leaf"]}
    sections: dict[str, list[int]] = {}
    for row in modules:
        sections.setdefault(_section(row["module"], containers), []).append(row["index"])
    return [(rows[0], name) for name, rows in sections.items()
            if len(rows) > 1 or name not in containers]


def render_png(data: dict[str, Any], path: str | Path) -> Path | None:
    """Draw the plot from the layers.json data; None (and a warning) when matplotlib is not installed."""
    plt = pyplot_or_none(Path(path))
    if plt is None:
        return None
    modules, criteria = data["modules"], data["criteria"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(10.0, len(modules) * 0.09), 8.0), sharex=True)
    panels = ((top, "worst_sample_rel_l2", lambda v: v, criteria["max_rel_l2"], "relative L2 error (worst image)"),
              (bottom, "worst_sample_cosine", lambda v: 1.0 - v, 1.0 - criteria["min_cosine"],
               "1 − cosine similarity (worst image)"))
    starts = _section_starts(modules)
    for axis, key, transform, threshold, label in panels:
        for index, _ in starts:
            axis.axvline(index - 0.5, color="0.85", linewidth=0.8)
        for mode in data["modes"]:
            xs, ys = _series(modules, mode, key, transform)
            style = dict(marker=".", markersize=4, linewidth=1) if mode == "chained" else \
                dict(marker="o", markersize=3, linestyle="none")  # isolated rows are independent: no line
            axis.plot(xs, ys, color=_COLORS[mode], label=mode, **style)
        axis.axhline(max(_FLOOR, threshold), color="tab:red", linestyle=":", linewidth=1,
                     label=f"threshold ({criteria['precision']})")
        axis.set_yscale("log")
        axis.set_ylabel(label)
        axis.grid(True, axis="y", which="major", alpha=0.3)
    notes = []
    for mode, first in data["first_divergent"].items():
        notes.append(f"{mode}: " + ("no divergent module" if first is None else
                                     f"first divergent {first['module']} (row {first['index']})"))
        if first is not None:
            for axis in (top, bottom):
                axis.axvline(first["index"], color=_COLORS[mode], linestyle="--", linewidth=1.2)
    top.text(0.01, 0.97, "\n".join(notes), transform=top.transAxes, va="top", fontsize=9,
             bbox=dict(facecolor="white", edgecolor="0.8", alpha=0.9))
    bottom.set_xticks([index for index, _ in starts], [name for _, name in starts], rotation=60, ha="right",
                      fontsize=8)
    bottom.set_xlabel(f"module, in execution order; labels mark where each section starts (exact zeros drawn at "
                      f"{_FLOOR:g})")
    top.legend(loc="best", fontsize=8)
    target = data["target"]
    top.set_title(f"{data['model']['name']}: {target['device']} {target['runtime']} {target['dtype']} vs CPU fp32, "
                  f"{data['num_images']} image(s)")
    fig.tight_layout()
    return save_figure(fig, Path(path), dpi=110)
