"""Human-readable artifacts, all rendered from the summary dict (never from a second copy of the data)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import json_writer, npy_writer, text_writer, write_set_atomic
from ..errors import OutputError
from ..formatting import NO_WEIGHTS_FILE, comparison_text, format_comparison, or_missing

_logger = logging.getLogger(__name__)

_METRIC_ROWS = (
    ("max_abs_diff", "max abs diff"),
    ("mean_abs_diff", "mean abs diff"),
    ("max_rel_err", "max guarded relative error"),
    ("rel_l2_err", "relative L2 error"),
    ("rmse", "RMSE"),
    ("cosine_similarity", "cosine similarity"),
    ("share_within_1e_3", "share within 0.1 % (rel)"),
    ("share_within_5e_3", "share within 0.5 % (rel)"),
    ("share_within_1e_2", "share within 1 % (rel)"),
    ("nonfinite_target", "NaN/Inf in target"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _check_row(check: dict[str, Any]) -> str:
    value, threshold = format_comparison(check["value"], check["op"], check["threshold"])
    return f"| {check['name']} | {value} | {check['op']} {threshold} | {'pass' if check['passed'] else '**FAIL**'} |"


def _verdict_lines(summary: dict[str, Any]) -> list[str]:
    return [f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']}: {comparison_text(c['value'], c['op'], c['threshold'])}"
            + ("" if c["passed"] or not c.get("detail") else f" ({c['detail']})")
            for c in summary["parity"]["checks"]]


def latency_lines(latency: dict[str, Any]) -> list[str]:
    """The latency line, and when the timing cannot be believed, why and what to do."""
    compute = latency["compute"]
    lines = [f"latency (batch {compute['batch_size']}): mean {compute['mean_ms']:.3f} ms, "
             f"p50 {compute['p50_ms']:.3f} ms, p99 {compute['p99_ms']:.3f} ms, {compute['images_per_s']:.1f} images/s"]
    reliability = latency.get("reliability") or {}
    if reliability.get("reliable") is False:
        lines.append("timing UNRELIABLE (reliable: false):")
        lines += [f"  - {reason['message']}" for reason in reliability["reasons"]]
        lines.append(f"  what to do: {reliability['advice']}")
    return lines


def _load_line(latency: dict[str, Any]) -> str:
    windows = [w for w in (latency.get("load") or {}).values() if w]
    if not windows:
        return "Machine load: not measured (no /proc on this system)."
    worst = max(windows, key=lambda w: w["foreign_busy_cores"])
    return (f"Machine load while timing: other processes up to {worst['foreign_busy_cores']:.2f} of "
            f"{worst['cpu_count']} cores busy, CPU steal {100 * max(w['steal_share'] for w in windows):.1f} %, "
            f"load average {worst['loadavg_before'][0]:.2f} before and {worst['loadavg_after'][0]:.2f} after.")


def _proof_lines(summary: dict[str, Any]) -> list[str]:
    """The structural proof (target in strict fp32) and the same-precision baseline, for the log and report.md."""
    lines = []
    proof = summary.get("structural_proof")
    if proof:
        lines.append(f"structural proof (same target, strict fp32, fp32 criteria): {proof['status'].upper()}: "
                     f"{proof['reason']}")
        for c in (proof.get("parity") or {}).get("checks", []):
            if not c["passed"]:
                lines.append(f"  FAIL  {c['name']}: {_fmt(c['value'])} {c['op']} {_fmt(c['threshold'])}"
                             + (f" ({c['detail']})" if c.get("detail") else ""))
    baseline = summary["parity"].get("baseline")
    if baseline:
        worst = max(baseline["per_image"], key=lambda row: row["rel_l2_ratio"])
        lines.append(f"same-precision baseline ({baseline['description']}): worst image rel L2 target "
                     f"{_fmt(worst['target_rel_l2'])} vs baseline {_fmt(worst['baseline_rel_l2'])}, ratio "
                     f"{_fmt(worst['rel_l2_ratio'])}; elements outside {baseline['outside_rtol']:g}: target "
                     f"{_fmt(worst['target_outside'])} vs baseline {_fmt(worst['baseline_outside'])}")
    return lines


def render_log(summary: dict[str, Any]) -> str:
    """accuracy_compare.log: the comparison as a porting engineer reads it in a terminal."""
    target, weights, overall = summary["target"], summary["weights"], summary["parity"]["overall"]
    lines = [
        f"accelport accuracy comparison ({summary['created_utc']})",
        f"model      {summary['model']['name']} ({summary['model']['head']}, output {summary['output_shape']})",
        f"weights    {weights['source']}: {weights['path'] or 'RANDOM INIT (no pretrained weights found)'}",
        "reference  cpu eager fp32",
        f"target     {target['device']} ({summary['environment']['device_name']}) {target['runtime']} "
        f"{target['dtype']}, fp32 math {target['fp32_math']}, criteria {summary['criteria']['precision']}",
        "",
        "overall metrics:",
        *(f"  {label:<28} {_fmt(overall[key])}" for key, label in _METRIC_ROWS),
        "",
        "per image:",
    ]
    for sample in summary["samples"]:
        m = sample["metrics"]
        line = f"  {sample['path']}: cos {m['cosine_similarity']:.7f}  rel_l2 {m['rel_l2_err']:.3e}  " \
               f"max_abs {m['max_abs_diff']:.3e}"
        if "reference_top5" in sample:
            top1 = "match" if sample["top1_match"] else ("near-tie" if sample["top1_near_tie"] else "MISMATCH")
            top5 = "match" if sample["top5_match"] else ("near-tie" if sample["top5_near_tie"] else "MISMATCH")
            line += f"  top1 {top1} ({sample['reference_top5_labels'][0]})  top5 {top5}"
        lines.append(line)
    lines += ["", "verdict checks:", *(f"  {v}" for v in _verdict_lines(summary)), "", *_proof_lines(summary), "",
              f"status: {summary['status'].upper()}", "", *latency_lines(summary["latency"]), ""]
    return "\n".join(lines)


def render_report(summary: dict[str, Any]) -> str:
    """report.md: the adaptation report, generated from summary.json."""
    lines = [*_setup_lines(summary), *_parity_lines(summary), *_sample_lines(summary["samples"]),
             *_latency_section(summary["latency"])]
    layers = summary.get("layer_report")
    if layers:
        lines += ["", "## Layer-by-layer comparison", f"See [{layers}]({layers})."]
    if summary.get("power_report"):
        lines += ["", "## Detection power", f"What this verdict detects: see [{summary['power_report']}]"
                  f"({summary['power_report']})."]
    return "\n".join(lines) + "\n"


def _setup_lines(summary: dict[str, Any]) -> list[str]:
    """The verdict, then what ran: model and preprocessing, weights, hardware and software."""
    env, target, weights, model = summary["environment"], summary["target"], summary["weights"], summary["model"]
    dc = model["data_config"]
    pretrained_note = "" if summary["pretrained_used"] else (
        "\n> **Warning: no pretrained weights were found; this run used a deterministic random init.** "
        "Parity and latency are still meaningful; class predictions are not.\n")
    return [
        f"# Adaptation report: {model['name']} on {target['device']}",
        "",
        f"**Verdict: {summary['status'].upper()}** (criteria `{summary['criteria']['precision']}`)",
        pretrained_note,
        "## Model",
        f"- timm model `{model['name']}`, head `{model['head']}`, {model['num_params']:,} parameters, "
        f"output shape {summary['output_shape']}",
        f"- preprocessing ({dc['size_mode']} size): input {dc['input_size']}, {dc['interpolation']}, "
        f"crop_pct {dc['crop_pct']} ({dc['crop_mode']}), mean {dc['mean']}, std {dc['std']}",
        "",
        "## Weights",
        f"- source: `{weights['source']}`; path: {_code_or(weights['path'], NO_WEIGHTS_FILE)}",
        f"- sha256: {_code_or(weights['sha256'], NO_WEIGHTS_FILE)}; format: "
        f"{or_missing(weights['file_format'], NO_WEIGHTS_FILE)}; key layout: "
        f"{or_missing(weights['key_layout'], NO_WEIGHTS_FILE)}",
        *([f"- target side only (--target-weights): `{summary['target_weights']['path']}`, sha256 "
           f"`{summary['target_weights']['sha256']}`"] if summary.get("target_weights") else []),
        "",
        "## Hardware and software",
        f"- target: `{target['device']}` ({env['device_name']}), runtime `{target['runtime']}`, dtype "
        f"`{target['dtype']}`, channels_last {target['channels_last']}, streams {target.get('streams', 1)}, "
        f"micro-batch {target.get('micro_batch') or 'none'}, "
        f"fp32 math `{target['fp32_math']}`",
        f"- numeric settings: {', '.join(f'{k}={v}' for k, v in target['numeric_settings'].items())}",
        f"- host CPU: {env['cpu']} ({env['cpu_count']} cores, torch threads {env['torch_threads']})",
        f"- python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, "
        f"torch_npu {or_missing(env['torch_npu'], 'not installed')}, numpy {env['numpy']}",
        "",
    ]


def _parity_lines(summary: dict[str, Any]) -> list[str]:
    overall = summary["parity"]["overall"]
    return [
        "## Parity against the CPU fp32 reference",
        f"{summary['inputs']['num_images']} real image(s).",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {label} | {_fmt(overall[key])} |" for key, label in _METRIC_ROWS),
        "",
        "| check | measured | criterion | result |",
        "|---|---|---|---|",
        *(_check_row(c) for c in summary["parity"]["checks"]),
        "",
        *(f"- {line}" for line in _proof_lines(summary)),
        "",
    ]


def _sample_lines(samples: list[dict[str, Any]]) -> list[str]:
    """A classifier's per-image table (none for features)."""
    if not samples or "reference_top5" not in samples[0]:
        return []
    lines = ["| image | cosine | rel L2 | reference top-1 | target top-1 | top-1 | top-5 |",
             "|---|---|---|---|---|---|---|"]
    for s in samples:
        lines.append(
            f"| {Path(s['path']).name} | {s['metrics']['cosine_similarity']:.7f} "
            f"| {s['metrics']['rel_l2_err']:.2e} "
            f"| {s['reference_top5_labels'][0]} | {s['target_top5_labels'][0]} | "
            f"{_agreement(s['top1_match'], s['top1_near_tie'])} | "
            f"{_agreement(s['top5_match'], s['top5_near_tie'])} |")
    return [*lines, ""]


def _latency_section(latency: dict[str, Any]) -> list[str]:
    lines = [
        "## Latency",
        f"Batch {latency['compute']['batch_size']}, {latency['warmup']} warm-up and {latency['compute']['iters']} "
        "timed iterations, device synchronised after each.",
        "",
        "| mode | mean ms | p50 ms | p90 ms | p99 ms | min ms | std ms | images/s (p50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("compute", "with_copies"):
        s = latency[mode]
        lines.append(f"| {mode} | {s['mean_ms']:.3f} | {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | {s['p99_ms']:.3f} | "
                     f"{s['min_ms']:.3f} | {s['std_ms']:.3f} | {s['images_per_s']:.1f} |")
    return [*lines, "", _load_line(latency), *_reliability_section(latency.get("reliability") or {})]


def _code_or(value: Any, meaning: str) -> str:
    return meaning if value is None else f"`{value}`"


def _reliability_section(reliability: dict[str, Any]) -> list[str]:
    if reliability.get("reliable") is not False:
        return ["Timing reliable: yes (no interference detected)."]
    return ["", "> **Timing unreliable (`reliable: false`)**: these figures were disturbed and should not be quoted.",
            *(f"> - {reason['message']}" for reason in reliability["reasons"]),
            f"> - what to do: {reliability['advice']}"]


def _agreement(match: bool, near_tie: bool) -> str:
    return "match" if match else ("near-tie" if near_tie else "**mismatch**")


def write_artifacts(out_dir: Path, summary: dict[str, Any], reference: np.ndarray | None = None,
                    target: np.ndarray | None = None) -> dict[str, Path]:
    """summary.json, accuracy_compare.log, report.md (and the outputs as .npy), written as one atomic set."""
    files = {
        "summary": ("summary.json", json_writer(summary)),
        "log": ("accuracy_compare.log", text_writer(render_log(summary))),
        "report": ("report.md", text_writer(render_report(summary))),
    }
    if reference is not None and target is not None:
        files["reference_outputs"] = ("reference_outputs.npy", npy_writer(reference))
        files["target_outputs"] = ("target_outputs.npy", npy_writer(target))
    try:
        paths = write_set_atomic(out_dir, dict(files.values()))
    except OSError as exc:  # e.g. the disk filled up during the run: nothing of this run was written
        raise OutputError(f"--out-dir {out_dir}: cannot write the artifacts ({exc.strerror or exc}); "
                          "nothing was written") from None
    artifacts = {key: paths[name] for key, (name, _) in files.items()}
    for path in artifacts.values():
        _logger.info("wrote %s", path)
    return artifacts
