"""eval.json, eval.md and eval_hist.png, written from the typed eval document (document.py); the Markdown reads
its attributes, never a second copy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import json_writer, text_writer
from ..environment import allocator_text, cpu_kind_text
from ..formatting import NO_WEIGHTS_FILE, format_comparison, markdown_cell, or_missing
from ..parity import zero_target_caution as parity_caution
from ..plotting import write_report_set
from ..runners.quantize import quantisation_text

if TYPE_CHECKING:
    from .document import EvalDocument

def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _g(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else or_missing(value, "n/a")


def render_markdown(doc: EvalDocument, histogram: str | None) -> str:
    weights, target, data, run = doc.weights, doc.target, doc.dataset, doc.run
    cache = run.reference_cache
    lines = [
        f"# accelport eval: {doc.header.model['name']} on {target['device']} "
        f"({doc.header.environment['device_name']})",
        "",
        f"**Status: {doc.status.upper()}** ({doc.header.created_utc}, {doc.header.wall_time_s} s)",
        "",
        f"- weights: `{weights.source}` {or_missing(weights.path, NO_WEIGHTS_FILE)}, sha256 "
        f"{or_missing(weights.sha256, NO_WEIGHTS_FILE)}"
        + ("" if weights.pretrained_used else " — **RANDOM INIT: accuracy is meaningless**"),
        f"- target: {target['runtime']} {target['dtype']}, fp32 math `{target['fp32_math']}`, criteria "
        f"`{target['precision']}`; reference: CPU eager fp32",
        *([f"- {line}"] if (line := quantisation_text(target, "--data")) else []),  # as report.md and layers.md say
        f"- host CPU: {cpu_kind_text(doc.header.environment)}; allocator: {allocator_text(doc.header.environment)}",
        *([f"- target weights (--target-weights): sha256 {target['target_weights']}"]
          if target.get("target_weights") else []),
        *([f"- structural proof: {target['structural_proof']['status']}: {target['structural_proof']['reason']}"]
          if target.get("structural_proof") else []),
        f"- dataset: `{data.root}`, {data.num_images} images, {data.num_evaluated} evaluated, "
        f"{len(data.skipped)} skipped; labels: {data.labels['kind']}"
        + (f" ({data.labels['format']})" if data.labels["format"] else ""),
        f"- processes: {run.world_size} ({run.backend or 'single process'}), batch {run.batch_size}, "
        f"{run.workers} loader worker(s) each; {run.resumed_images} image(s) taken from the resume journal; "
        f"reference cache: {cache['hits'] if cache else 'off'}" + (" hits" if cache else ""),
        "",
    ]
    acc = doc.accuracy
    if acc:
        lines += ["## Accuracy", "", f"{acc['num_images']} labelled images.", "",
                  "| | reference (CPU fp32) | target | difference |", "|---|---|---|---|"]
        for k in ("top1", "top5"):
            lines.append(f"| {k} | {_pct(acc['reference'][k])} ({acc['reference'][k + '_correct']}) | "
                         f"{_pct(acc['target'][k])} ({acc['target'][k + '_correct']}) | "
                         f"{100 * acc['difference'][k]:+.2f} pts |")
        lines.append("")
    else:
        lines += ["## Accuracy", "", "No labels: agreement figures only.", ""]
    return "\n".join(lines + _figure_lines(doc, histogram) + _worst_lines(doc)) + "\n"


def zero_target_caution(doc: EvalDocument) -> str | None:
    """run's caution at dataset scale: the target returned all zeros where the reference did not (the figures read
    only cosine 0 and rel L2 1 there); int8 names the usual cause."""
    examples = ", ".join(doc.agreement.get("zero_target_examples") or [])
    return parity_caution(doc.agreement.get("zero_target_count") or 0, doc.dataset.num_evaluated,
                               f"e.g. {examples}", str(doc.target.get("dtype")), not doc.weights.pretrained_used)


def _figure_lines(doc: EvalDocument, histogram: str | None) -> list[str]:
    """Agreement, the per-image error distribution, the checks, the histogram and the throughput."""
    agr = doc.agreement
    lines = ["## Agreement with the reference", "", "| | agreement | mismatches | of which near-ties |",
             "|---|---|---|---|",
             f"| top-1 | {_pct(agr['top1'])} | {agr['top1_mismatches']} | {agr['top1_near_ties']} |",
             f"| top-5 set | {_pct(agr['top5'])} | {agr['top5_mismatches']} | {agr['top5_near_ties']} |", "",
             *([f"**{caution}**", ""] if (caution := zero_target_caution(doc)) else []),
             "## Per-image error distribution", "", "| metric | min | p1 | p50 | mean | p99 | max |",
             "|---|---|---|---|---|---|---|"]
    for name, dist in doc.distributions.items():
        cells = " | ".join(_g(dist[k]) for k in ("min", "p1", "p50", "mean", "p99", "max"))
        lines.append(f"| {name} | {cells} |")
    lines += ["", "| check | measured | criterion | result |", "|---|---|---|---|"]
    for c in doc.checks:
        value, threshold = format_comparison(c.value, c.op, c.threshold)
        lines.append(f"| {c.name} | {value} | {c.op} {threshold} | {'pass' if c.passed else '**FAIL**'} |")
    if doc.reading:
        lines += ["", doc.reading[0].upper() + doc.reading[1:]]
    if histogram:
        lines += ["", f"![per-image error histogram]({histogram})"]
    tp = doc.throughput
    lines += ["", "## Throughput", "", "| stage | images/s | seconds |", "|---|---|---|"]
    lines += [f"| {row['stage']} | {'n/a' if row['images_per_s'] is None else format(row['images_per_s'], '.1f')} | "
              f"{row['seconds']:.2f} |" for row in tp.stages]
    lines += ["", f"The loop waited {tp.data_wait_share * 100:.1f} % of its time for the data loader "
                  f"(bottleneck: {tp.bottleneck})."]
    return lines


def _worst_lines(doc: EvalDocument) -> list[str]:
    """The worst images, the classes with the most top-1 disagreement, and the skipped files."""
    skipped = doc.dataset.skipped
    lines = ["", "## Worst images (lowest cosine)", "", "| image | label | cosine | rel L2 | reference top-1 | "
             "target top-1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {markdown_cell(w['path'])} | {or_missing(w['label'], 'no label')} | {w['cosine']:.7f} | "
              f"{w['rel_l2']:.2e} | "
              f"{w['reference_top1_name']} | "
              f"{w['target_top1_name']}{'' if w['top1_match'] else ' (near-tie)' if w['top1_near_tie'] else ' **!**'} |"
              for w in doc.worst_images]
    lines += ["", "## Classes with the most top-1 disagreement", ""]
    if doc.classes_most_disagreement:
        lines += ["| class | images | disagreements | reference correct | target correct |", "|---|---|---|---|---|"]
        lines += [f"| {c['class']} {c['name']} | {c['images']} | {c['top1_disagreements']} | "
                  f"{c['reference_correct']} | "
                  f"{c['target_correct']} |" for c in doc.classes_most_disagreement]
    else:
        lines.append("No class: the target's top-1 equals the reference's on every image.")
    if skipped:
        lines += ["", "## Skipped images", ""] + [f"- `{s['path']}`: {s['reason']}" for s in skipped]
    return lines


def write_outputs(out_dir: Path, doc: EvalDocument, cosines: list[float], rel_l2: list[float]) -> dict[str, Path]:
    """eval.json, eval.md and (matplotlib permitting) eval_hist.png, which eval.md links, as one atomic set."""
    from .plot import write_histogram

    title = (f"{doc.header.model['name']}: {doc.target['device']} {doc.target['dtype']} vs CPU fp32, "
             f"{len(cosines)} images")
    artifacts = write_report_set(
        out_dir, lambda histogram: {"json": ("eval.json", json_writer(doc.to_json())),
                                    "markdown": ("eval.md", text_writer(doc.to_markdown(histogram)))},
        ("eval_hist.png", lambda path: write_histogram(path, cosines, rel_l2, title)))
    if "plot" in artifacts:
        artifacts["histogram"] = artifacts.pop("plot")
    return artifacts
