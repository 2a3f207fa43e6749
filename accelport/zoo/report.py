"""zoo.json (the document), and zoo.csv, zoo.md, zoo.png rendered from it; all written atomically.

Rows are in plan order (models as given, then runtimes, then dtypes), whoever ran them, so a sweep split over
torchrun ranks or resumed after a kill produces the same rows as one uninterrupted process. The speed-up of a
cell is the eager fp32 cell's mean latency over its own (same model, same sweep); the pick is each model's
fastest passing cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic, write_text_atomic
from .cell import STATUSES
from .config import ZooConfig

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CSV_FIELDS = ("model", "runtime", "dtype", "status", "reason", "cosine", "max_abs_diff", "worst_rel_l2",
              "latency_ms", "speedup_vs_eager", "setup_s", "export_route", "input_size", "output_shape", "wall_s")
_SHORT = {"passed": "pass", "failed": "FAIL", "unsupported": "n/a", "crashed": "CRASH", "timed_out": "TIMEOUT"}


def column(row: dict[str, Any]) -> str:
    return f"{row['runtime']}/{row['dtype']}"


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_eager`` on every row that has a latency, when the model's eager fp32 cell has one too."""
    eager = {r["model"]: r.get("latency_ms") for r in rows if r["runtime"] == "eager" and r["dtype"] == "fp32"}
    for row in rows:
        base, own = eager.get(row["model"]), row.get("latency_ms")
        row["speedup_vs_eager"] = round(base / own, 3) if base and own else None


def pick(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """Each model's fastest passing cell (None when none passed)."""
    picks = []
    for model in models:
        passing = [r for r in rows if r["model"] == model and r["status"] == "passed" and r.get("latency_ms")]
        best = min(passing, key=lambda r: r["latency_ms"], default=None)
        picks.append({"model": model, "fastest": None if best is None else {
            k: best.get(k) for k in ("runtime", "dtype", "latency_ms", "speedup_vs_eager", "export_route")}})
    return picks


def build_document(config: ZooConfig, models: list[str], rows: list[dict[str, Any]], device: str,
                   world_size: int) -> dict[str, Any]:
    from ..environment import package_version

    rows = [dict(row) for row in rows]
    add_speedups(rows)
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
    return {"schema_version": SCHEMA_VERSION, "kind": "accelport-zoo",
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device, "world_size": world_size,
            "settings": {"runtimes": list(config.runtimes), "dtypes": list(config.dtypes),
                         "head": config.spec.head, "batch_size": config.batch_size,
                         "images": list(config.spec.images) or "samples/", "warmup": config.warmup,
                         "iters": config.iters,
                         "timeout_s": config.timeout_s, "memory_gb": config.memory_gb},
            "versions": {p: package_version(p) for p in ("torch", "timm", "onnxruntime", "openvino", "accelport")},
            "models": models, "columns": list(dict.fromkeys(column(r) for r in rows)), "counts": counts,
            "pass_rate": round(counts["passed"] / len(rows), 4) if rows else None,
            "rows": rows, "pick": pick(rows, models)}


def render_csv(document: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in document["rows"]:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue()


def cell_text(row: dict[str, Any] | None, reason_chars: int = 0) -> str:
    """A cell's verdict and speed-up; with ``reason_chars``, the start of the reason of a cell that did not
    pass, on a second line (the heat-map, where the full reasons are not at hand)."""
    if row is None:
        return ""
    text = _SHORT[row["status"]]
    if row["status"] in ("passed", "failed") and row.get("speedup_vs_eager"):
        text += f" {row['speedup_vs_eager']:.2f}x"
    reason = row.get("reason") or ""
    if reason_chars and row["status"] != "passed" and reason:
        text += "\n" + (reason if len(reason) <= reason_chars else reason[: reason_chars - 1] + "…")
    return text


def render_markdown(document: dict[str, Any], with_pick: bool = True) -> str:
    rows, columns = document["rows"], document["columns"]
    by_cell = {(r["model"], column(r)): r for r in rows}
    counts = ", ".join(f"{n} {status}" for status, n in document["counts"].items() if n)
    lines = [f"# accelport zoo: {len(document['models'])} models x {', '.join(columns)}", "",
             f"Device `{document['device']}` ({document['world_size']} process(es)); {document['settings']['head']}; "
             f"batch {document['settings']['batch_size']}; {counts}; pass rate {document['pass_rate']:.1%}. "
             "Each cell: verdict against the CPU fp32 reference, and speed-up of its mean latency over eager fp32.",
             "", "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {m} | " + " | ".join(cell_text(by_cell.get((m, c))) for c in columns) + " |"
              for m in document["models"]]
    unexplained = [r for r in rows if r["status"] != "passed"]
    if unexplained:
        lines += ["", "## Cells that did not pass", "", "| model | runtime/dtype | status | reason |",
                  "|---|---|---|---|"]
        lines += [f"| {r['model']} | {column(r)} | {r['status']} | {_cell(r.get('reason'))} |" for r in unexplained]
    if with_pick:
        lines += ["", "## Fastest passing configuration per model (`--pick`)", "", render_pick(document)]
    return "\n".join(lines) + "\n"


def render_pick(document: dict[str, Any]) -> str:
    lines = ["| model | runtime | dtype | mean latency (ms) | speed-up over eager |", "|---|---|---|---|---|"]
    for entry in document["pick"]:
        best = entry["fastest"]
        if best is None:
            lines.append(f"| {entry['model']} | none passed | | | |")
        else:
            speedup = f"{best['speedup_vs_eager']:.2f}x" if best.get("speedup_vs_eager") else ""
            lines.append(f"| {entry['model']} | {best['runtime']} | {best['dtype']} | {best['latency_ms']:.3f} | "
                         f"{speedup} |")
    return "\n".join(lines)


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def write_outputs(document: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """zoo.json, zoo.csv and zoo.md, each written atomically (zoo.png: plot.write_heatmap, which uses this module)."""
    return {"json": write_json_atomic(out_dir / "zoo.json", document),
            "csv": write_text_atomic(out_dir / "zoo.csv", render_csv(document)),
            "markdown": write_text_atomic(out_dir / "zoo.md", render_markdown(document))}
