"""layers.csv and layers.md, rendered from the layers.json data (never from a second copy), and writing them all."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic, write_text_atomic
from ..formatting import NO_WEIGHTS_FILE, or_missing
from ..metrics import TensorMetrics
from .plot import render_png

_logger = logging.getLogger(__name__)

FILES = {"json": "layers.json", "csv": "layers.csv", "markdown": "layers.md", "plot": "layers.png"}
_ROW_FIELDS = ("divergent", "first_divergent", "reason", "worst_sample_rel_l2", "worst_sample_cosine",
               "worst_rel_l2_image", "new_nonfinite")
_METRIC_FIELDS = tuple(TensorMetrics.__dataclass_fields__)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


def render_csv(data: dict[str, Any]) -> str:
    """One row per module call; for each mode its verdict, worst-image values and the core metrics."""
    first = {mode: (f["index"] if f else None) for mode, f in data["first_divergent"].items()}
    header = ["index", "module", "type", "depth", "leaf", "output_shape"]
    for mode in data["modes"]:
        header += [f"{mode}_{name}" for name in (*_ROW_FIELDS, *_METRIC_FIELDS)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in data["modules"]:
        line = [row["index"], row["module"], row["type"], row["depth"], row["leaf"],
                "x".join(map(str, row["output_shape"] or []))]
        for mode in data["modes"]:
            entry = row[mode] or {}
            values = {**entry, "first_divergent": first[mode] == row["index"]} if entry else {}
            line += [values.get(name, "") for name in _ROW_FIELDS]
            line += [(entry.get("metrics") or {}).get(name, "") for name in _METRIC_FIELDS]
        writer.writerow(line)
    return out.getvalue()


def _first_line(mode: str, first: dict[str, Any] | None, total: int) -> str:
    if first is None:
        return f"| {mode} | none | | | all {total} modules within the criteria |"
    return f"| {mode} | `{first['module']}` | {first['type']} | {first['index']} of {total} | {first['reason']} |"


_VERDICTS = {"diverged": "a divergent module was found",
             "output-failed": "no single module crosses a limit, but the model's output fails `accelport run`'s checks",
             "passed-with-divergent-module": "a module crosses a limit, but the model's output passes every check "
                                             "of `accelport run` (its error is absorbed downstream): a pass",
             "no-divergence": "no module diverges"}


def _output_lines(verdict: dict[str, Any] | None) -> list[str]:
    """The model's output judged as `accelport run` judges it: the checks that fail, where the error grows most."""
    if not verdict or not verdict["judged"]:
        return []
    lines = ["## The model's output, judged as `accelport run` judges it", ""]
    if verdict["passed"]:
        return lines + ["Every check of `accelport run` passes on the model's output.", ""]
    lines += [f"- fails: {check}" for check in verdict["failed_checks"]]
    lines += [f"- the error grows fastest ({mode}) at `{g['module']}` ({g['type']}, row {g['index']}, worst-image "
              f"rel L2 {g['worst_sample_rel_l2']:.3g})" for mode, g in (verdict["fastest_growth"] or {}).items() if g]
    return lines + [""]


def render_markdown(data: dict[str, Any]) -> str:
    """layers.md: the layer report that report.md links to."""
    target, reference, memory = data["target"], data["reference"], data["memory"]
    modules, modes, total = data["modules"], data["modes"], len(data["modules"])
    verdict = _VERDICTS[data["status"]]
    lines = [
        f"# Layer-by-layer comparison: {data['model']['name']} on {target['device']}",
        "",
        f"**{verdict.capitalize()}** (criteria `{data['criteria']['precision']}`, {data['num_images']} image(s), "
        f"batch size {data['inputs']['batch_size']}).",
        "",
        f"- reference: CPU eager fp32, weights `{reference['weights']['source']}` "
        f"{or_missing(reference['weights']['path'], NO_WEIGHTS_FILE)}",
        f"- target: `{target['device']}` {target['runtime']} {target['dtype']}, fp32 math {target['fp32_math']}, "
        f"weights `{target['weights']['source']}` {or_missing(target['weights']['path'], NO_WEIGHTS_FILE)}"
        + (" (same as the reference)" if target["weights_same_as_reference"] else ""),
        "",
        "## First divergent module",
        "",
        "| mode | module | type | row | why |",
        "|---|---|---|---|---|",
        *(_first_line(mode, data["first_divergent"][mode], total) for mode in modes),
        "",
        f"Rule: {data['divergence_rule']}",
        "",
        *_output_lines(data.get("output_verdict")),
        f"![relative L2 error and cosine by module]({FILES['plot']})",
        "",
        "## Memory",
        "",
        f"- activations held by the comparison at once: {_mib(memory['held_activations_peak_bytes'])} (every module "
        f"output of one side for one batch would be {_mib(memory['all_module_outputs_bytes'])})",
        f"- process peak RSS: {_mib(memory['process_rss_peak_bytes'])} ({memory['process_rss_peak_method']}; "
        f"{_mib(memory['process_rss_before_bytes'])} before the comparison)",
        f"- device peak allocated: {_mib(memory['device_peak_allocated_bytes'])}",
        "",
        "## Modules (execution order)",
        "",
        "| # | module | type | " + " | ".join(f"{m} rel L2 | {m} cosine" for m in modes) + " | verdict |",
        "|---|---|---|" + "---|---|" * len(modes) + "---|",
    ]
    first = {mode: (f["index"] if f else None) for mode, f in data["first_divergent"].items()}
    for row in modules:
        cells, marks = [], []
        for mode in modes:
            entry = row[mode]
            if entry is None:
                cells += ["", ""]
                continue
            cells += [f"{entry['worst_sample_rel_l2']:.2e}", f"{entry['worst_sample_cosine']:.7f}"]
            if first[mode] == row["index"]:
                marks.append(f"**first divergent ({mode})**")
            elif entry["divergent"]:
                marks.append(f"diverges ({mode})")
        lines.append(f"| {row['index']} | `{row['module']}` | {row['type']} | " + " | ".join(cells)
                     + f" | {', '.join(marks)} |")
    return "\n".join(lines) + "\n"


def write_layer_artifacts(out_dir: Path, data: dict[str, Any]) -> dict[str, Path]:
    """layers.json, layers.csv, layers.md and layers.png, each written atomically (the PNG needs matplotlib)."""
    artifacts = {
        "json": write_json_atomic(out_dir / FILES["json"], data),
        "csv": write_text_atomic(out_dir / FILES["csv"], render_csv(data)),
        "markdown": write_text_atomic(out_dir / FILES["markdown"], render_markdown(data)),
    }
    plot = render_png(data, out_dir / FILES["plot"])
    if plot is not None:
        artifacts["plot"] = plot
    for path in artifacts.values():
        _logger.info("wrote %s", path)
    return artifacts
