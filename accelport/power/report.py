"""power.md and power.png, rendered from the typed power document, and the three files written as one atomic set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import json_writer, text_writer
from ..environment import allocator_text, cpu_kind_text
from ..plotting import pyplot_or_none, save_figure, write_report_set
from .faults import NO_EFFECT_REL_L2, names_module, probe_size

if TYPE_CHECKING:
    from .document import PowerDocument


def _size(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _named(module: str, first: dict[str, str | None]) -> str:
    """Per mode: yes when the first divergent module is the faulted module or its block, at most
    ``MAX_PARENT_LEVELS`` above it (``-``: not located)."""
    if not first:
        return "-"
    return ", ".join(f"{mode}: {'yes' if names_module(name, module) else '**no**'}" for mode, name in first.items())


def render_power(doc: PowerDocument) -> str:
    """power.md: per fault type, the smallest size the verdict detects and whether layers names the module."""
    lines = [
        f"# Detection power: {doc.model} on {doc.device} ({doc.runtime}, {doc.dtype})",
        "",
        f"Standard faults injected into a copy of the weights, each judged as `accelport run --target-weights "
        f"<faulty copy>` would judge it (criteria `{doc.precision}`, with the structural proof in strict fp32 and "
        f"the same-precision baseline where they apply), on {doc.num_images} image(s). Sizes tried: "
        f"{', '.join(map(_size, doc.sizes))} (relative to the tensor's mean |value|; norm scale: 1 + size).",
        "A PASS of `accelport run` on this model and target rules out every fault at or above its smallest detected "
        "size; below it, a fault of that kind may pass.",
        *_moved_sites(doc),
        *([f"Target device: {doc.environment.get('device_name', 'not named')}; host CPU: "
           f"{cpu_kind_text(doc.environment)}; allocator: {allocator_text(doc.environment)}; torch "
           f"{doc.environment.get('torch', 'not recorded')}."] if doc.environment is not None else []),
        "",
        "| fault | tensor's module | smallest detected | layers names the module (or its block) | first divergent |",
        "|---|---|---|---|---|",
    ]
    for entry in doc.summary:
        first = entry.layers.first_divergent if entry.layers else {}
        smallest = _size(entry.smallest_detected) if entry.detected else "**not detected**"
        if entry.detected and entry.smallest_detected is None:
            smallest = "detected"
        if entry.no_effect:
            smallest = "untestable: no effect on the output"
        where = ", ".join(f"{mode}: `{name}`" for mode, name in first.items()) or "-"
        if entry.layers:
            where += f" ({entry.layers.dtype} pass)"
        lines.append(f"| {entry.kind} | `{entry.module}` | {smallest} | {_named(entry.module, first)} | "
                     f"{where} |")
    lines += ["", "![detection power](power.png)", "", "## Every fault", "",
              "The fault's own effect is the faulty copy on the CPU fp32 reference against the clean weights: how far "
              "the fault moves the output before any device error. A fault whose effect is under the output limits "
              f"(here max_rel_l2 {doc.criteria.max_rel_l2:g}) can pass without the verdict being blind.", "",
              "| fault | size | detected | failed checks | worst-image rel L2 | the fault's own effect (rel L2) |",
              "|---|---|---|---|---|---|"]
    for row in doc.faults:
        effect = "-" if row.reference_rel_l2 is None else f"{row.reference_rel_l2:.3g}"
        lines.append(f"| {row.kind} | {_size(row.size)} | {'yes' if row.detected else 'no'} | "
                     f"{', '.join(row.failed_checks) or '-'} | {row.worst_sample_rel_l2:.3g} | {effect} |")
    return "\n".join(lines) + "\n"


def _moved_sites(doc: PowerDocument) -> list[str]:
    """Lines on the sites that were moved, or kept with no effect, because a fault there left the output unchanged."""
    lines = []
    for site in doc.sites:
        if not site.skipped:
            continue
        passed_over = ", ".join(f"`{name}`" for name in site.skipped[:3])
        if len(site.skipped) > 3:
            passed_over += f" and {len(site.skipped) - 3} more (power.json `sites`)"
        unchanged = f"moved the CPU fp32 output by less than {NO_EFFECT_REL_L2:g} (relative L2)"
        if site.no_effect:
            lines.append(f"- **{site.where}**: a {probe_size(doc.sizes):g} fault in each of {passed_over} "
                         f"{unchanged} with these weights, so its faults are untestable here (kept at "
                         f"`{site.parameter}`).")
        else:
            lines.append(f"- **{site.where}**: `{site.parameter}`; passed over {passed_over}, where a "
                         f"{probe_size(doc.sizes):g} fault {unchanged} with these weights.")
    if lines:
        lines = ["", "Sites moved: a fault in a tensor that does not reach the output (a residual branch whose last "
                 "norm is zero, as in timm's random init of ResNets, or scaled by 1e-6, as in ConvNeXt V1's) would be "
                 "'not detected' by any verdict, so such tensors are passed over for their nearest neighbour that "
                 "matters.", "", *lines]
    return lines


def _plot(doc: PowerDocument, path: Path) -> Path | None:
    plt = pyplot_or_none(path)
    if plt is None:
        return None
    figure, ax = plt.subplots(figsize=(8, 4.5))
    for kind in dict.fromkeys(row.kind for row in doc.faults if row.size is not None):
        rows = [r for r in doc.faults if r.kind == kind]
        ax.plot([r.size for r in rows], [max(r.worst_sample_rel_l2, 1e-9) for r in rows], marker="o", label=kind)
        detected = [r for r in rows if r.detected]
        ax.scatter([r.size for r in detected], [max(r.worst_sample_rel_l2, 1e-9) for r in detected], s=90,
                   facecolors="none", edgecolors="red")
    ax.axhline(doc.criteria.max_rel_l2, color="grey", linestyle="--", label="max_rel_l2 (absolute bound)")
    ax.set(xscale="log", yscale="log", xlabel="fault size (relative)", ylabel="worst-image output rel L2",
           title=f"{doc.model} {doc.dtype}: red rings = detected by the verdict")
    ax.legend(fontsize=7)
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


def write_power_artifacts(out_dir: Path, doc: PowerDocument) -> dict[str, Path]:
    """power.json, power.md and power.png as one atomic set: ``run`` links power.md by what power.json says."""
    return write_report_set(out_dir, {"json": ("power.json", json_writer(doc.to_json())),
                                      "markdown": ("power.md", text_writer(doc.to_markdown()))},
                            ("power.png", lambda path: _plot(doc, path)))
