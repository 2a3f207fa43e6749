"""eval.json, eval.md and eval_hist.png; the Markdown is rendered from the eval.json dict, never a second copy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import write_json_atomic, write_text_atomic
from ..formatting import NO_WEIGHTS_FILE, format_comparison, or_missing
from ..job.header import REFERENCE, DocumentHeader, model_record, target_record, weights_fields, weights_record

if TYPE_CHECKING:
    from ..criteria import Criteria
    from ..job.context import JobContext
    from .config import EvalConfig

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def build_document(*, figures: dict[str, Any], config: EvalConfig, job: JobContext, listing: Any,
                   runner_settings: dict[str, Any], criteria: Criteria, skipped: list[dict[str, str]],
                   run_info: dict[str, Any], throughput: dict[str, Any]) -> dict[str, Any]:
    """The whole evaluation with the same header, weights provenance and environment fields as summary.json."""
    weights = job.loaded.weights
    header = DocumentHeader.of(SCHEMA_VERSION, job, model=model_record(job), reference=REFERENCE,
                               target=target_record(job, runner_settings, criteria.precision))
    return {
        "kind": "accelport-eval",
        "status": "passed" if figures["passed"] else "failed",
        **weights_fields(weights),
        "weight_sha256": weights.sha256,
        "weights": weights_record(weights),
        **header.to_json(),
        "dataset": {
            "root": str(listing.root), "num_images": len(listing.items), "num_evaluated": figures["num_images"],
            "labels": listing.labels.to_json(), "skipped": skipped,
        },
        "run": run_info,
        "criteria": criteria.to_json() | {"max_disagreement": config.max_disagreement,
                                          "max_accuracy_drop": config.max_accuracy_drop},
        "throughput": throughput,
        **{k: v for k, v in figures.items() if k not in ("passed", "num_images")},
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _g(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else or_missing(value, "n/a")


def render_markdown(doc: dict[str, Any], histogram: str | None) -> str:
    weights, target, data, run = doc["weights"], doc["target"], doc["dataset"], doc["run"]
    lines = [
        f"# accelport eval: {doc['model']['name']} on {target['device']} ({doc['environment']['device_name']})",
        "",
        f"**Status: {doc['status'].upper()}** ({doc['created_utc']}, {doc['wall_time_s']} s)",
        "",
        f"- weights: `{weights['source']}` {or_missing(weights['path'], NO_WEIGHTS_FILE)}, sha256 "
        f"{or_missing(weights['sha256'], NO_WEIGHTS_FILE)}"
        + ("" if weights["pretrained_used"] else " — **RANDOM INIT: accuracy is meaningless**"),
        f"- target: {target['runtime']} {target['dtype']}, fp32 math `{target['fp32_math']}`, criteria "
        f"`{target['precision']}`; reference: CPU eager fp32",
        f"- dataset: `{data['root']}`, {data['num_images']} images, {data['num_evaluated']} evaluated, "
        f"{len(data['skipped'])} skipped; labels: {data['labels']['kind']}"
        + (f" ({data['labels']['format']})" if data["labels"]["format"] else ""),
        f"- processes: {run['world_size']} ({run['backend'] or 'single process'}), batch {run['batch_size']}, "
        f"{run['workers']} loader worker(s) each; {run['resumed_images']} image(s) taken from the resume journal; "
        f"reference cache: {run['reference_cache']['hits'] if run['reference_cache'] else 'off'}"
        + (" hits" if run["reference_cache"] else ""),
        "",
    ]
    acc = doc["accuracy"]
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
    agr = doc["agreement"]
    lines += ["## Agreement with the reference", "", "| | agreement | mismatches | of which near-ties |",
              "|---|---|---|---|",
              f"| top-1 | {_pct(agr['top1'])} | {agr['top1_mismatches']} | {agr['top1_near_ties']} |",
              f"| top-5 set | {_pct(agr['top5'])} | {agr['top5_mismatches']} | {agr['top5_near_ties']} |", "",
              "## Per-image error distribution", "", "| metric | min | p1 | p50 | mean | p99 | max |",
              "|---|---|---|---|---|---|---|"]
    for name, dist in doc["distributions"].items():
        cells = " | ".join(_g(dist[k]) for k in ("min", "p1", "p50", "mean", "p99", "max"))
        lines.append(f"| {name} | {cells} |")
    lines += ["", "| check | measured | criterion | result |", "|---|---|---|---|"]
    for c in doc["checks"]:
        value, threshold = format_comparison(c["value"], c["op"], c["threshold"])
        lines.append(f"| {c['name']} | {value} | {c['op']} {threshold} | {'pass' if c['passed'] else '**FAIL**'} |")
    if histogram:
        lines += ["", f"![per-image error histogram]({histogram})"]
    tp = doc["throughput"]
    lines += ["", "## Throughput", "", "| stage | images/s | seconds |", "|---|---|---|"]
    lines += [f"| {row['stage']} | {row['images_per_s']:.1f} | {row['seconds']:.2f} |" for row in tp["stages"]]
    lines += ["", f"The loop waited {tp['data_wait_share'] * 100:.1f} % of its time for the data loader "
                  f"(bottleneck: {tp['bottleneck']})."]
    lines += _worst_lines(doc)
    return "\n".join(lines) + "\n"


def _worst_lines(doc: dict[str, Any]) -> list[str]:
    """The worst images, the classes with the most top-1 disagreement, and the skipped files."""
    skipped = doc["dataset"]["skipped"]
    lines = ["", "## Worst images (lowest cosine)", "", "| image | label | cosine | rel L2 | reference top-1 | "
              "target top-1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {w['path']} | {or_missing(w['label'], 'no label')} | {w['cosine']:.7f} | {w['rel_l2']:.2e} | "
              f"{w['reference_top1_name']} | "
              f"{w['target_top1_name']}{'' if w['top1_match'] else ' (near-tie)' if w['top1_near_tie'] else ' **!**'} |"
              for w in doc["worst_images"]]
    lines += ["", "## Classes with the most top-1 disagreement", ""]
    if doc["classes_most_disagreement"]:
        lines += ["| class | images | disagreements | reference correct | target correct |", "|---|---|---|---|---|"]
        lines += [f"| {c['class']} {c['name']} | {c['images']} | {c['top1_disagreements']} | "
                  f"{c['reference_correct']} | "
                  f"{c['target_correct']} |" for c in doc["classes_most_disagreement"]]
    else:
        lines.append("No class: the target's top-1 equals the reference's on every image.")
    if skipped:
        lines += ["", "## Skipped images", ""] + [f"- `{s['path']}`: {s['reason']}" for s in skipped]
    return lines


def write_outputs(out_dir: Path, doc: dict[str, Any], cosines: list[float], rel_l2: list[float]) -> dict[str, Path]:
    """eval.json, eval_hist.png and eval.md, each written atomically."""
    from .plot import write_histogram

    title = (f"{doc['model']['name']}: {doc['target']['device']} {doc['target']['dtype']} vs CPU fp32, "
             f"{len(cosines)} images")
    histogram = write_histogram(out_dir / "eval_hist.png", cosines, rel_l2, title)  # None without matplotlib
    paths = {"json": write_json_atomic(out_dir / "eval.json", doc)} | ({"histogram": histogram} if histogram else {})
    markdown = render_markdown(doc, histogram.name if histogram else None)
    paths["markdown"] = write_text_atomic(out_dir / "eval.md", markdown)
    for path in paths.values():
        _logger.info("wrote %s", path)
    return paths
