"""power.json, power.md and power.png, rendered from one document and written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic, write_text_atomic
from ..plotting import pyplot_or_none, save_figure
from .faults import names_module

_logger = logging.getLogger(__name__)


def _size(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _named(module: str, first: dict[str, str | None]) -> str:
    """Per mode: yes when the first divergent module is the faulted module or its block (``-``: not located)."""
    if not first:
        return "-"
    return ", ".join(f"{mode}: {'yes' if names_module(name, module) else '**no**'}" for mode, name in first.items())


def render_power(data: dict[str, Any]) -> str:
    """power.md: per fault type, the smallest size the verdict detects and whether layers names the module."""
    lines = [
        f"# Detection power: {data['model']} on {data['device']} ({data['runtime']}, {data['dtype']})",
        "",
        f"Standard faults injected into a copy of the weights, each judged as `accelport run --target-weights "
        f"<faulty copy>` would judge it (criteria `{data['precision']}`, with the structural proof in strict fp32 and "
        f"the same-precision baseline where they apply), on {data['num_images']} image(s). Sizes tried: "
        f"{', '.join(map(_size, data['sizes']))} (relative to the tensor's mean |value|; norm scale: 1 + size).",
        "A PASS of `accelport run` on this model and target rules out every fault at or above its smallest detected "
        "size; below it, a fault of that kind may pass.",
        "",
        "| fault | tensor's module | smallest detected | layers names the module (or its block) | first divergent |",
        "|---|---|---|---|---|",
    ]
    for entry in data["summary"]:
        layers = entry["layers"] or {}
        first = layers.get("first_divergent") or {}
        smallest = _size(entry["smallest_detected"]) if entry["detected"] else "**not detected**"
        if entry["detected"] and entry["smallest_detected"] is None:
            smallest = "detected"
        where = ", ".join(f"{mode}: `{name}`" for mode, name in first.items()) or "-"
        if layers:
            where += f" ({layers['dtype']} pass)"
        lines.append(f"| {entry['kind']} | `{entry['module']}` | {smallest} | {_named(entry['module'], first)} | "
                     f"{where} |")
    lines += ["", "![detection power](power.png)", "", "## Every fault", "",
              "| fault | size | detected | failed checks | worst-image rel L2 |", "|---|---|---|---|---|"]
    for row in data["faults"]:
        lines.append(f"| {row['kind']} | {_size(row['size'])} | {'yes' if row['detected'] else 'no'} | "
                     f"{', '.join(row['failed_checks']) or '-'} | {row['worst_sample_rel_l2']:.3g} |")
    return "\n".join(lines) + "\n"


def _plot(data: dict[str, Any], path: Path) -> Path | None:
    plt = pyplot_or_none(path)
    if plt is None:
        return None
    figure, ax = plt.subplots(figsize=(8, 4.5))
    for kind in dict.fromkeys(row["kind"] for row in data["faults"] if row["size"] is not None):
        rows = [r for r in data["faults"] if r["kind"] == kind]
        ax.plot([r["size"] for r in rows], [max(r["worst_sample_rel_l2"], 1e-9) for r in rows], marker="o",
                label=kind)
        detected = [r for r in rows if r["detected"]]
        ax.scatter([r["size"] for r in detected], [max(r["worst_sample_rel_l2"], 1e-9) for r in detected], s=90,
                   facecolors="none", edgecolors="red")
    ax.axhline(data["criteria"]["max_rel_l2"], color="grey", linestyle="--", label="max_rel_l2 (absolute bound)")
    ax.set(xscale="log", yscale="log", xlabel="fault size (relative)", ylabel="worst-image output rel L2",
           title=f"{data['model']} {data['dtype']}: red rings = detected by the verdict")
    ax.legend(fontsize=7)
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


def write_power_artifacts(out_dir: Path, data: dict[str, Any]) -> dict[str, Path]:
    artifacts = {"json": write_json_atomic(out_dir / "power.json", data),
                 "markdown": write_text_atomic(out_dir / "power.md", render_power(data))}
    plot = _plot(data, out_dir / "power.png")
    if plot is not None:
        artifacts["plot"] = plot
    return artifacts
