"""layers.csv and layers.md, rendered from the typed layers document (never from a second copy), and writing the
set: layers.json, layers.csv, layers.md, layers.png."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import json_writer, text_writer
from ..environment import allocator_text, cpu_kind_text
from ..formatting import NO_WEIGHTS_FILE, listed, or_missing, skipped_lines
from ..metrics import TensorMetrics
from ..plotting import ReportFiles, write_report_set
from ..proofs import rounding_text
from ..runners.quantize import quantisation_text
from .compare import DIVERGENCE_RULE
from .plot import render_png

if TYPE_CHECKING:
    from .compare import LayerComparison, LayerRow
    from .document import LayersDocument
    from .memory import MemoryReport
    from .verdict import OutputVerdict

# LayersDocument.first_divergent: what the console's answer line, layers.md, the API, power and --layers-on-fail name
ANSWER_RULE = "the strict fp32 pass's where it diverges (a weight or layout fault), else the target's own"
FILES = {"json": "layers.json", "csv": "layers.csv", "markdown": "layers.md", "plot": "layers.png"}
_ROW_FIELDS = ("divergent", "first_divergent", "reason", "worst_sample_rel_l2", "worst_sample_cosine",
               "worst_rel_l2_image", "worst_cosine_image", "new_nonfinite")
_METRIC_FIELDS = tuple(TensorMetrics.__dataclass_fields__)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Divergence:
    """The first divergent module of one mode: its row, and why it diverges."""

    index: int
    row: LayerRow
    reason: str | None


def first_divergence(comparison: LayerComparison, mode: str) -> Divergence | None:
    """``comparison.first_divergent`` with the reason of the row it names (as layers.json's ``first_divergent``)."""
    found = comparison.first_divergent(mode)
    if found is None:
        return None
    stats = found[1].stats.get(mode)
    return Divergence(found[0], found[1], stats.divergence(comparison.criteria) if stats is not None else None)


def _first_rows(doc: LayersDocument) -> dict[str, int | None]:
    """Per mode, the row index of the first divergent module (None: none)."""
    return {mode: (found.index if (found := first_divergence(doc.comparison, mode)) else None)
            for mode in doc.comparison.modes}


def render_csv(doc: LayersDocument) -> str:
    """One row per module call; for each mode its verdict, worst-image values and the core metrics."""
    comparison = doc.comparison
    modes, first = comparison.modes, _first_rows(doc)
    header = ["index", "module", "type", "depth", "leaf", "output_shape", "note"]
    for mode in modes:
        header += [f"{mode}_{name}" for name in (*_ROW_FIELDS, *_METRIC_FIELDS)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for index, layer in enumerate(comparison.rows):
        row = layer.to_json(index, modes, comparison.criteria)  # the module's layers.json record
        line = [index, layer.key, layer.module_type, layer.depth, layer.is_leaf,
                "x".join(map(str, layer.output_shape or [])), layer.note or ""]  # why a blank row was not compared
        for mode in modes:
            entry = row[mode] or {}
            values = {**entry, "first_divergent": first[mode] == index} if entry else {}
            line += [values.get(name, "") for name in _ROW_FIELDS]
            line += [(entry.get("metrics") or {}).get(name, "") for name in _METRIC_FIELDS]
        writer.writerow(line)
    return out.getvalue()


def _first_line(mode: str, first: Divergence | None, comparison: LayerComparison, label: str | None = None) -> str:
    total = len(comparison.rows)
    if first is None:
        return f"| {label or mode} | none | | | {comparison.within_text(mode)}, all within the criteria |"
    return (f"| {label or mode} | `{first.row.key}`{comparison.folded_words(first.row.key)} | "
            f"{first.row.module_type} | {first.index} of {total} | "
            f"{first.reason} |")


_VERDICTS = {"diverged": "a divergent module was found",
             "output-failed": "no single module crosses a limit, but the model's output fails `accelport run`'s checks",
             "passed-with-divergent-module": "a module crosses a limit, but the model's output passes every check "
                                             "of `accelport run` (its error is absorbed downstream): a pass",
             "no-divergence": "no module diverges"}


def _output_lines(verdict: OutputVerdict, caution: str | None) -> list[str]:
    """The model's output judged as `accelport run` judges it: the checks that fail, where the error grows most,
    and run's caution when the target's output is all zeros (the first divergent module alone does not say it)."""
    if verdict.parity is None:  # the model's output was not captured: not judged
        return []
    lines = ["## The model's output, judged as `accelport run` judges it", ""]
    if caution:
        lines += [f"**{caution}**", ""]
    if not verdict.failed:
        return lines + ["Every check of `accelport run` passes on the model's output.", ""]
    lines += [f"- fails: {check}" for check in verdict.failed_check_lines()]
    lines += [f"- the error grows fastest ({mode}) at `{g['module']}` ({g['type']}, row {g['index']}, worst-image "
              f"rel L2 {g['worst_sample_rel_l2']:.3g})" for mode, g in (verdict.fastest_growth or {}).items() if g]
    return lines + [""]


def _memory_lines(memory: MemoryReport) -> list[str]:
    return [
        "## Memory",
        "",
        f"- activations held by the comparison at once: {_mib(memory.held_activations_peak_bytes)} (every module "
        f"output of one side for one batch would be {_mib(memory.all_module_outputs_bytes)})",
        f"- process peak RSS: {_mib(memory.process_rss_peak_bytes)} ({memory.process_rss_peak_method}; "
        f"{_mib(memory.process_rss_before_bytes)} before the comparison)",
        f"- device peak allocated: {_mib(memory.device_peak_allocated_bytes)}",
        "",
    ]


def _module_lines(doc: LayersDocument) -> list[str]:
    """The module table, in execution order: worst-image rel L2 and cosine per mode, and which rows diverge."""
    comparison = doc.comparison
    modes, first = comparison.modes, _first_rows(doc)
    lines = ["## Modules (execution order)", "",
             "| # | module | type | " + " | ".join(f"{m} rel L2 | {m} cosine" for m in modes) + " | verdict |",
             "|---|---|---|" + "---|---|" * len(modes) + "---|"]
    for index, row in enumerate(comparison.rows):
        cells, marks = [], []
        for mode in modes:
            stats = row.stats.get(mode)
            if stats is None:
                cells += ["", ""]
                continue
            cells += [f"{stats.worst_rel_l2:.2e}", f"{stats.worst_cosine:.7f}"]
            if first[mode] == index:
                marks.append(f"**first divergent ({mode})**")
            elif stats.divergence(comparison.criteria) is not None:
                marks.append(f"diverges ({mode})")
        if row.note and not marks:  # why a blank row was not compared, as layers.csv says it
            marks.append(row.note)
        lines.append(f"| {index} | `{row.key}` | {row.module_type} | " + " | ".join(cells)
                     + f" | {', '.join(marks)} |")
    return lines


def _structural_lines(structural: LayerComparison | None) -> list[str]:
    """The strict fp32 pass of a half-precision or int8 target, judged by fp32 criteria: where a fault shows when
    the target precision's own rounding hides it."""
    if structural is None:
        return []
    return [_first_line(mode, first_divergence(structural, mode), structural,
                        f"{mode}, strict fp32 pass (fp32 criteria)") for mode in structural.modes]


def _rounded_lines(rounded: dict[str, Any] | None) -> list[str]:
    """Against what the strict fp32 pass of a half-precision --target-weights copy compared."""
    if not rounded:
        return []
    return [f"- strict fp32 pass: against the reference with its weights rounded as --target-weights stores them "
            f"({rounding_text(rounded['tensors_rounded'])}; every other tensor as loaded), as run's structural proof"]


def render_markdown(doc: LayersDocument) -> str:
    """layers.md: the layer report that report.md links to."""
    target, reference, model = doc.header.target or {}, doc.header.reference or {}, doc.header.model
    comparison = doc.comparison
    lines = [
        f"# Layer-by-layer comparison: {model['name']} on {target['device']}",
        "",
        f"**{_VERDICTS[doc.status].capitalize()}** (criteria `{comparison.criteria.precision}`, "
        f"{comparison.num_images} image(s), batch size {doc.inputs.batch_size}).",
        *skipped_lines(doc.inputs.skipped, "- "),
        "",
        f"- reference: CPU eager fp32, weights `{reference['weights']['source']}` "
        f"{or_missing(reference['weights']['path'], NO_WEIGHTS_FILE)}",
        f"- target: `{target['device']}` ({doc.header.environment.get('device_name', 'device not named')}) "
        f"{target['runtime']} {target['dtype']}, fp32 math {target['fp32_math']}, "
        f"weights `{target['weights']['source']}` {or_missing(target['weights']['path'], NO_WEIGHTS_FILE)}"
        + (" (same as the reference)" if target["weights_same_as_reference"] else ""),
        *([f"- {line}"] if (line := quantisation_text(target)) else []),
        f"- host CPU: {cpu_kind_text(doc.header.environment)}; allocator: {allocator_text(doc.header.environment)}",
        *([f"- {line}"] if (line := weights_differ_text(target)) else []),
        *_rounded_lines(doc.structural_rounded),
        "",
        "## First divergent module",
        "",
        "| mode | module | type | row | why |",
        "|---|---|---|---|---|",
        *(_first_line(mode, first_divergence(comparison, mode), comparison) for mode in comparison.modes),
        *_structural_lines(doc.structural),
        "",
        *_answer_lines(doc),
        f"Rule: {DIVERGENCE_RULE}",
        "",
        *_output_lines(doc.verdict, doc.zero_target_caution()),
        f"![relative L2 error and cosine by module]({FILES['plot']})",
        "",
        *_memory_lines(comparison.memory),
        *_module_lines(doc),
    ]
    return "\n".join(lines) + "\n"


def weights_differ_text(target: dict[str, Any]) -> str | None:
    """The tensors --target-weights changes, each with the module that owns it: a fault in a parameter a module
    uses directly (ViT's pos_embed, LeViT's attention biases) first shows in a module after it, which the chained
    answer names; None without --target-weights."""
    differing = target.get("weights_differ_in")
    if differing is None:
        return None
    if not differing:
        return "--target-weights holds the same values as --weights (up to the rounding of its stored dtype)"
    owned = [f"{name} (of {name.rpartition('.')[0] or 'the model itself'})" for name in differing]
    return (f"--target-weights differs from --weights in {len(differing)} tensor(s): {listed(owned)}; a fault is "
            "in the modules that own them, whichever module first shows it")


def _answer_lines(doc: LayersDocument) -> list[str]:
    """The answer (``LayersDocument.first_divergent``) under the table that lists both passes, and why a module is
    named where no fault is (the precision's own error)."""
    if doc.structural is None:
        return []
    answer = doc.answer()
    lines = []
    if any(answer.values()):
        lines.append(f"**Answer** ({ANSWER_RULE}): " + ", ".join(
            f"{mode} `{doc.comparison.module_text(module)}`" if module else f"{mode} none"
            for mode, module in answer.items()) + ".")
    if own_error := doc.precision_error_only():
        lines.append(f"Reading: {own_error}.")
    return [*lines, ""] if lines else []


def layer_report_files(doc: LayersDocument) -> tuple[ReportFiles, tuple[str, Callable[[Path], Path | None]]]:
    """layers.json, layers.csv and layers.md, and the picture's (name, render): ``write_report_set``'s arguments,
    for ``layers`` alone or inside the set of a failing ``run --layers-on-fail``."""
    data: dict[str, Any] = doc.to_json()
    files: ReportFiles = {"json": (FILES["json"], json_writer(data)),
                          "csv": (FILES["csv"], text_writer(doc.to_csv())),
                          "markdown": (FILES["markdown"], text_writer(doc.to_markdown()))}
    return files, (FILES["plot"], lambda path: render_png(data, path))


def write_layer_artifacts(out_dir: Path, doc: LayersDocument) -> dict[str, Path]:
    """layers.json, layers.csv, layers.md and layers.png written as one atomic set (the PNG needs matplotlib): an
    interrupted run left a new layers.json beside the older md, csv and png."""
    return write_report_set(out_dir, *layer_report_files(doc))
