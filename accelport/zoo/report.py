"""zoo.csv and zoo.md rendered from the typed zoo document (document.py), and the files written as one atomic set.

zoo.png is plot.write_heatmap, which uses ``cell_text`` from here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import json_writer, text_writer
from ..plotting import write_report_set

if TYPE_CHECKING:
    from .document import ZooDocument, ZooRow

CSV_FIELDS = ("model", "runtime", "dtype", "status", "reason", "cosine", "max_abs_diff", "worst_rel_l2",
              "latency_ms", "speedup_vs_eager", "setup_s", "export_route", "input_size", "output_shape", "wall_s",
              "timing_reliable", "speedup_reliable", "input_blind")
UNRELIABLE_MARK = "?"  # after a speed-up whose cell or eager baseline was timed on a busy machine
UNRELIABLE_NOTE = (f"`{UNRELIABLE_MARK}` after a speed-up: the cell's or its eager fp32 baseline's own run judged its "
                   "timing unreliable (other processes busy, or a spread too wide: `latency.reliability` in the cell's "
                   "summary.json). The two are timed in separate processes at different moments, so such a ratio "
                   "is not a measurement to quote; rerun those cells on an idle machine, or compare runtimes with "
                   "`accelport bench`, which times them in alternating rounds in one process.")
BLIND_MARK = "*"  # after "pass": the reference barely depends on the images, so the pass is blind to that
BLIND_NOTE = (f"`pass{BLIND_MARK}`: the cell's reference outputs barely depend on its images (one image's output, "
              "given for every image, would be within max_rel_l2: `parity.constant_output_rel_l2` in the cell's "
              "summary.json), as with many random-init weights; such a pass cannot see a target that ignores its "
              "input. Rerun with real weights or more varied images.")
_SHORT = {"passed": "pass", "failed": "FAIL", "unsupported": "n/a", "crashed": "CRASH", "timed_out": "TIMEOUT"}


def render_csv(document: ZooDocument) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in document.rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.to_json().items()})
    return buffer.getvalue()


def cell_text(row: ZooRow | None, reason_chars: int = 0) -> str:
    """A cell's verdict and speed-up; with ``reason_chars``, the start of the reason of a cell that did not
    pass, on a second line (the heat-map, where the full reasons are not at hand)."""
    if row is None:
        return ""
    text = _SHORT[row.status] + (BLIND_MARK if row.status == "passed" and row.input_blind else "")
    if row.status in ("passed", "failed") and row.speedup_vs_eager:
        text += f" {row.speedup_vs_eager:.2f}x" + (UNRELIABLE_MARK if row.speedup_reliable is False else "")
    reason = row.reason or ""
    if reason_chars and row.status != "passed" and reason:
        text += "\n" + (reason if len(reason) <= reason_chars else reason[: reason_chars - 1] + "…")
    return text


def _pass_rate_text(document: ZooDocument) -> str:
    if document.pass_rate is None:
        return "pass rate: no cell ran"
    return f"pass rate {document.pass_rate:.1%}" + (f" of the {document.cells_ran} cells that ran"
                                                    if document.counts["unsupported"] else "")


def render_markdown(document: ZooDocument, with_pick: bool = True) -> str:
    rows, columns, settings = document.rows, document.columns, document.settings
    by_cell = {(r.model, r.column): r for r in rows}
    counts = ", ".join(f"{n} {status}" for status, n in document.counts.items() if n)
    models = len(document.models)
    has_baseline = any(r.runtime == "eager" and r.dtype == "fp32" for r in rows)
    lines = [f"# accelport zoo: {models} model{'s' if models != 1 else ''} x {', '.join(columns)}", "",
             f"Device `{document.device}` ({document.world_size} process(es)); {settings.head}; "
             f"batch {settings.batch_size}; {counts}; {_pass_rate_text(document)}; allocator: "
             f"{document.allocator or 'not recorded'}. "
             + ("Each cell: verdict against the CPU fp32 reference, and speed-up of its mean latency over eager fp32."
                if has_baseline else "Each cell: verdict against the CPU fp32 reference. No speed-ups: they are "
                "over eager fp32, which this sweep did not run (add eager to --runtimes and fp32 to --dtypes)."),
             "", "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {m} | " + " | ".join(cell_text(by_cell.get((m, c))) for c in columns) + " |"
              for m in document.models]
    if any(r.speedup_reliable is False for r in rows):
        lines += ["", UNRELIABLE_NOTE]
    if any(r.status == "passed" and r.input_blind for r in rows):
        lines += ["", BLIND_NOTE]
    unexplained = [r for r in rows if r.status != "passed"]
    if unexplained:
        lines += ["", "## Cells that did not pass", "", "| model | runtime/dtype | status | reason |",
                  "|---|---|---|---|"]
        lines += [f"| {r.model} | {r.column} | {r.status} | {_cell(r.reason)} |" for r in unexplained]
    if with_pick:
        lines += ["", "## Fastest passing configuration per model (`--pick`)", "", render_pick(document)]
    return "\n".join(lines) + "\n"


def render_pick(document: ZooDocument) -> str:
    lines = ["| model | runtime | dtype | mean latency (ms) | speed-up over eager |", "|---|---|---|---|---|"]
    for entry in document.pick:
        best = entry.fastest
        if best is None:
            lines.append(f"| {entry.model} | none passed | | | |")
        else:
            speedup = (f"{best.speedup_vs_eager:.2f}x" + (UNRELIABLE_MARK if best.speedup_reliable is False else "")
                       if best.speedup_vs_eager else "")
            lines.append(f"| {entry.model} | {best.runtime} | {best.dtype} | {best.latency_ms:.3f} | {speedup} |")
    return "\n".join(lines)


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def write_outputs(document: ZooDocument, out_dir: Path,
                  heatmap: Callable[[Path], Path | None] | None = None) -> dict[str, Path]:
    """zoo.json, zoo.csv, zoo.md and the picture ``heatmap(path)`` draws (plot.write_heatmap, which uses this module;
    None: no picture) as one atomic set."""
    return write_report_set(out_dir, {"json": ("zoo.json", json_writer(document.to_json())),
                                      "csv": ("zoo.csv", text_writer(document.to_csv())),
                                      "markdown": ("zoo.md", text_writer(document.to_markdown()))},
                            ("zoo.png", heatmap))
